package pt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
)

// SOCKS5 (RFC 1928) with username/password authentication (RFC 1929), as
// far as a PT client needs it. The exchange, one step at a time (each
// written in one Write, each answer read with exact lengths so that no
// stream byte is read ahead):
//
//	greeting   05 01 <method>            method 00 (none) or 02 (user/pass)
//	choice     05 <method>               the PT must choose ours
//	auth       01 <ulen> <user> <plen> <pass>   only with arguments
//	status     01 00                     anything else is a failure
//	request    05 01 00 <atyp> <addr> <port:2>  CONNECT
//	reply      05 <rep> 00 <atyp> <addr> <port:2>
//
// <atyp> is 01 (4-byte IPv4), 03 (1-byte length, then a host name) or 04
// (16-byte IPv6). The PT replies only once it has connected to the target
// through its transport, so the reply is where a dial waits.

const (
	socksVersion      = 0x05
	socksAuthNone     = 0x00
	socksAuthPassword = 0x02
	socksNoMethod     = 0xff
	socksAuthVersion  = 0x01
	socksConnect      = 0x01
	socksAtypIPv4     = 0x01
	socksAtypDomain   = 0x03
	socksAtypIPv6     = 0x04
	socksSucceeded    = 0x00
)

// errSOCKS is wrapped by errors of a SOCKS exchange that breaks the
// protocol; a failure reply is a *SOCKSError instead.
var errSOCKS = errors.New("pt: bad socks answer")

// socksReply is a SOCKS5 reply.
type socksReply struct {
	code byte
	host string // BND.ADDR: an IP address's text, or a host name
	port uint16
}

// socksDial asks the SOCKS5 server on rw to CONNECT to target
// ("host:port"), passing args (encoded client arguments, possibly empty)
// as username and password. It returns nil once the server has granted
// the request; rw then carries the stream.
func socksDial(rw io.ReadWriter, target, args string) error {
	req, err := appendRequest(nil, target)
	if err != nil {
		return err
	}
	method := byte(socksAuthNone)
	if args != "" {
		method = socksAuthPassword
	}
	if _, err := rw.Write([]byte{socksVersion, 1, method}); err != nil {
		return err
	}
	var b [2]byte
	if _, err := io.ReadFull(rw, b[:]); err != nil {
		return readErr(err)
	}
	switch {
	case b[0] != socksVersion:
		return fmt.Errorf("%w: version %d", errSOCKS, b[0])
	case b[1] == socksNoMethod:
		return fmt.Errorf("%w: no acceptable authentication method (offered %d)", errSOCKS, method)
	case b[1] != method:
		return fmt.Errorf("%w: chose authentication method %d, offered %d", errSOCKS, b[1], method)
	}
	if args != "" {
		user, pass := splitSOCKSAuth(args)
		auth := make([]byte, 0, 3+len(user)+len(pass))
		auth = append(auth, socksAuthVersion, byte(len(user)))
		auth = append(auth, user...)
		auth = append(auth, byte(len(pass)))
		auth = append(auth, pass...)
		_, err := rw.Write(auth)
		clear(auth) // the arguments may be secret
		if err != nil {
			return err
		}
		if _, err := io.ReadFull(rw, b[:]); err != nil {
			return readErr(err)
		}
		if b[0] != socksAuthVersion || b[1] != 0 {
			return fmt.Errorf("%w: arguments rejected (status %d); the PT's log says why", errSOCKS, b[1])
		}
	}
	if _, err := rw.Write(req); err != nil {
		return err
	}
	r, err := readReply(rw)
	if err != nil {
		return err
	}
	if r.code != socksSucceeded {
		return &SOCKSError{Code: r.code}
	}
	return nil
}

// readErr turns an early EOF into a protocol error: the PT hung up.
func readErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: the PT closed the connection", errSOCKS)
	}
	return err
}

// appendRequest appends a CONNECT request for target ("host:port") to b.
func appendRequest(b []byte, target string) ([]byte, error) {
	host, portStr, err := net.SplitHostPort(target)
	if err != nil {
		return nil, fmt.Errorf("pt: address %q: %w", target, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("pt: address %q: bad port", target)
	}
	b = append(b, socksVersion, socksConnect, 0)
	b, err = appendAddr(b, host)
	if err != nil {
		return nil, fmt.Errorf("pt: address %q: %w", target, err)
	}
	return binary.BigEndian.AppendUint16(b, uint16(port)), nil
}

// appendAddr appends <atyp> <addr> for host, an IP address or a name.
// An IPv4-mapped IPv6 address is sent as IPv4.
func appendAddr(b []byte, host string) ([]byte, error) {
	if ip, err := netip.ParseAddr(host); err == nil && ip.Zone() == "" {
		if ip = ip.Unmap(); ip.Is4() {
			a := ip.As4()
			return append(append(b, socksAtypIPv4), a[:]...), nil
		}
		a := ip.As16()
		return append(append(b, socksAtypIPv6), a[:]...), nil
	}
	if host == "" || len(host) > 255 {
		return nil, fmt.Errorf("host name of %d bytes", len(host))
	}
	return append(append(b, socksAtypDomain, byte(len(host))), host...), nil
}

// readReply reads one SOCKS5 reply from r, reading no byte past it. It
// never panics, whatever r holds.
func readReply(r io.Reader) (socksReply, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return socksReply{}, readErr(err)
	}
	if h[0] != socksVersion {
		return socksReply{}, fmt.Errorf("%w: reply version %d", errSOCKS, h[0])
	}
	if h[2] != 0 {
		return socksReply{}, fmt.Errorf("%w: reply reserved byte %d", errSOCKS, h[2])
	}
	rep := socksReply{code: h[1]}
	var addr []byte
	switch h[3] {
	case socksAtypIPv4:
		addr = make([]byte, 4+2)
	case socksAtypIPv6:
		addr = make([]byte, 16+2)
	case socksAtypDomain:
		var n [1]byte
		if _, err := io.ReadFull(r, n[:]); err != nil {
			return socksReply{}, readErr(err)
		}
		if n[0] == 0 {
			return socksReply{}, fmt.Errorf("%w: reply with an empty host name", errSOCKS)
		}
		addr = make([]byte, int(n[0])+2)
	default:
		return socksReply{}, fmt.Errorf("%w: reply address type %d", errSOCKS, h[3])
	}
	if _, err := io.ReadFull(r, addr); err != nil {
		return socksReply{}, readErr(err)
	}
	host := addr[:len(addr)-2]
	rep.port = binary.BigEndian.Uint16(addr[len(addr)-2:])
	switch h[3] {
	case socksAtypIPv4:
		rep.host = netip.AddrFrom4([4]byte(host)).String()
	case socksAtypIPv6:
		rep.host = netip.AddrFrom16([16]byte(host)).String()
	default:
		rep.host = string(host)
	}
	return rep, nil
}

// appendReply appends the encoding of r to b; it is readReply's inverse,
// used by tests that play a PT's SOCKS server.
func appendReply(b []byte, r socksReply) ([]byte, error) {
	b = append(b, socksVersion, r.code, 0)
	b, err := appendAddr(b, r.host)
	if err != nil {
		return nil, err
	}
	return binary.BigEndian.AppendUint16(b, r.port), nil
}
