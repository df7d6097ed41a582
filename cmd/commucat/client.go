package main

import (
	"bufio"
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/commucat/commucat/backends/messaging"
	"github.com/commucat/commucat/backends/store"
	"github.com/commucat/commucat/core/client"
	"github.com/commucat/commucat/core/handshake"
	"github.com/commucat/commucat/core/invite"
	"github.com/commucat/commucat/core/router"
	"github.com/spf13/cobra"
)

// messagingSession runs a messaging client on a session until fn returns.
func messagingSession(ctx context.Context, s *router.Session, fn func(ctx context.Context, c *messaging.Client) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := messaging.NewClient(messagingConn(s), messaging.ClientConfig{}, nil)
	var wg sync.WaitGroup
	var runErr, clientErr error
	wg.Go(func() { runErr = s.Run(ctx) })
	wg.Go(func() {
		clientErr = c.Run(ctx)
		cancel() // the session ended: stop fn too
	})
	err := fn(ctx, c)
	s.Close()
	cancel()
	wg.Wait()
	if err != nil {
		return err
	}
	_ = runErr
	_ = clientErr
	return nil
}

func newRegisterCmd() *cobra.Command {
	var f clientFlags
	var line, name string
	cmd := &cobra.Command{
		Use:   "register --invite LINE --name NAME",
		Short: "Register this device with a gateway, using an invite",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if line == "" || name == "" {
				return errors.New("register needs --invite LINE and --name NAME")
			}
			if err := messaging.ValidName(name); err != nil {
				return fmt.Errorf("--name: %w", err)
			}
			in, err := invite.Parse(line)
			if err != nil {
				return fmt.Errorf("--invite: %w", err)
			}
			if in.Code == "" {
				return errors.New("--invite: this invite has no registration code; ask the operator for a new one")
			}
			if time.Now().After(in.Expires) {
				return fmt.Errorf("--invite: the registration code expired at %s; ask the operator for a new one", in.Expires.UTC().Format(time.RFC3339))
			}
			dir, err := stateDir(f.state, "client")
			if err != nil {
				return err
			}
			if fileExists(filepath.Join(dir, certFile)) {
				return fmt.Errorf("%s already holds a registered device; use another --state directory", dir)
			}
			log, err := f.logger(cmd)
			if err != nil {
				return err
			}
			key, _, err := handshake.LoadOrCreateStatic(filepath.Join(dir, deviceKeyFile))
			if err != nil {
				return err
			}
			defer key.Wipe()
			s, ep, err := connect(cmd.Context(), key, in.Gateway, in.Padding, in.Endpoints, &f, log)
			if err != nil {
				return err
			}
			var certBytes []byte
			err = messagingSession(cmd.Context(), s, func(ctx context.Context, c *messaging.Client) error {
				ctx, cancel := context.WithTimeout(ctx, f.timeout)
				defer cancel()
				var err error
				certBytes, err = c.Register(ctx, messaging.RegisterRequest{Code: in.Code, Name: name})
				return err
			})
			if err != nil {
				return fmt.Errorf("registration refused: %w", gatewayError(err))
			}
			cert, err := handshake.ParseCertificate(certBytes, in.Signing, time.Now())
			if err != nil {
				return fmt.Errorf("the gateway's certificate is not valid: %w", err)
			}
			if err := cert.CheckKeys(key.Public(), in.Gateway); err != nil {
				return fmt.Errorf("the gateway's certificate is not for this device: %w", err)
			}
			if err := writeFileAtomic(filepath.Join(dir, certFile), certBytes); err != nil {
				return err
			}
			info := gatewayInfo{
				Gateway:   handshake.FormatPublic(in.Gateway),
				Signing:   base64.RawURLEncoding.EncodeToString(in.Signing),
				Padding:   in.Padding,
				Endpoints: in.Endpoints,
				User:      cert.User,
			}
			if err := writeJSON(filepath.Join(dir, gatewayInfoFile), info); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "registered %s (device %s) over %s; state in %s\n",
				cert.User, hex.EncodeToString(cert.DeviceID[:4]), ep.Transport, dir)
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&line, "invite", "", "the invite line (commucat://...)")
	cmd.Flags().StringVar(&name, "name", "", "the user name to register")
	return cmd
}

func newSendCmd() *cobra.Command {
	var f clientFlags
	var to, idHex string
	cmd := &cobra.Command{
		Use:   "send --to USER TEXT...",
		Short: "Send a message (TEXT, or standard input when TEXT is -)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return errors.New("send needs --to USER")
			}
			body := []byte(strings.Join(args, " "))
			if len(args) == 1 && args[0] == "-" {
				b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), messaging.MaxBody+1))
				if err != nil {
					return fmt.Errorf("read standard input: %w", err)
				}
				body = b
			}
			if len(body) > messaging.MaxBody {
				return fmt.Errorf("message too long (%d bytes > %d)", len(body), messaging.MaxBody)
			}
			// The id makes a retry safe: the gateway stores an id from one
			// sender once, and the recipient shows it once.
			var id [16]byte
			if idHex != "" {
				b, err := hex.DecodeString(idHex)
				if err != nil || len(b) != len(id) {
					return fmt.Errorf("--id: want 32 hex digits, got %q", idHex)
				}
				copy(id[:], b)
			} else if _, err := crand.Read(id[:]); err != nil {
				return fmt.Errorf("send: %w", err)
			}
			idText := hex.EncodeToString(id[:])
			cs, err := loadClient(f.state)
			if err != nil {
				return err
			}
			defer cs.wipe()
			log, err := f.logger(cmd)
			if err != nil {
				return err
			}
			s, _, err := connect(cmd.Context(), cs.key, cs.gateway, cs.info.Padding, cs.info.Endpoints, &f, log)
			if err != nil {
				return err
			}
			err = messagingSession(cmd.Context(), s, func(ctx context.Context, c *messaging.Client) error {
				ctx, cancel := context.WithTimeout(ctx, f.timeout)
				defer cancel()
				return c.SendEnvelope(ctx, messaging.Envelope{ID: id, Peer: to, Sent: time.Now(), Body: body})
			})
			var refused *messaging.ProblemError
			switch {
			case errors.As(err, &refused): // a definite answer: nothing stored
				return fmt.Errorf("send to %s: %w", to, gatewayError(err))
			case err != nil:
				return fmt.Errorf("send to %s: %w (not confirmed as stored: retry with --id %s, never twice without it)", to, gatewayError(err), idText)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "stored for %s (id %s)\n", to, idText)
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&to, "to", "", "the recipient's user name")
	cmd.Flags().StringVar(&idHex, "id", "", "the message id (32 hex digits), to retry a send that was not confirmed without a duplicate")
	return cmd
}

// received is one message as `listen --json` prints it.
type received struct {
	ID       string    `json:"id"`
	From     string    `json:"from"`
	Sent     time.Time `json:"sent"`
	Received time.Time `json:"received"`
	Text     string    `json:"text"`
}

func newListenCmd() *cobra.Command {
	var f clientFlags
	var asJSON bool
	var count int
	var dur time.Duration
	cmd := &cobra.Command{
		Use:   "listen",
		Short: "Print incoming messages; reconnect when the connection drops",
		Long: `Print incoming messages as they arrive, one line each (continuation lines
indented with a tab), and reconnect when the connection drops. Control
characters in a message (terminal escape sequences, carriage returns,
bidirectional overrides) are printed as escapes such as \x1b; --json prints
the text as sent, in a JSON string.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cs, err := loadClient(f.state)
			if err != nil {
				return err
			}
			defer cs.wipe()
			log, err := f.logger(cmd)
			if err != nil {
				return err
			}
			seen, err := store.OpenSQLite(filepath.Join(cs.dir, clientDBFile))
			if err != nil {
				return err
			}
			defer seen.Close()
			// The records of messages seen suppress redeliveries, which end
			// when a message expires at the gateway (inbox.ttl, 7 days by
			// default); a year bounds the table and outlasts any sane TTL.
			if n, err := seen.PurgeSeen(cmd.Context(), time.Now().Add(-seenRetention)); err != nil {
				log.Warn("forgetting old seen-message records failed", "err", err)
			} else if n > 0 {
				log.Debug("forgot old seen-message records", "count", n)
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			if dur > 0 {
				ctx, cancel = context.WithTimeout(ctx, dur)
				defer cancel()
			}
			out := bufio.NewWriter(cmd.OutOrStdout())
			shown := 0
			handle := func(e messaging.Envelope) error {
				if asJSON {
					b, err := json.Marshal(received{
						ID: hex.EncodeToString(e.ID[:]), From: e.Peer, Sent: e.Sent.UTC(),
						Received: time.Now().UTC(), Text: string(e.Body),
					})
					if err != nil {
						return err
					}
					out.Write(append(b, '\n'))
				} else {
					fmt.Fprintf(out, "%s  %s: %s\n", e.Sent.Local().Format("2006-01-02 15:04:05"), terminalText(e.Peer), terminalText(string(e.Body)))
				}
				if err := out.Flush(); err != nil {
					return &handleError{fmt.Errorf("write message: %w", err)}
				}
				shown++
				if count > 0 && shown >= count {
					cancel()
				}
				return nil
			}
			return listenLoop(ctx, cs, &f, log, seen, handle)
		},
	}
	f.add(cmd)
	fl := cmd.Flags()
	fl.BoolVar(&asJSON, "json", false, "print one JSON object per message")
	fl.IntVar(&count, "count", 0, "exit after this many messages (0: never)")
	fl.DurationVar(&dur, "for", 0, "exit after this long (0: never)")
	return cmd
}

// listenLoop keeps a session open and reconnects with capped, jittered
// exponential backoff until ctx ends.
// seenRetention is how long `commucat listen` remembers a message it
// showed, to suppress the gateway's redeliveries of it.
const seenRetention = 365 * 24 * time.Hour

func listenLoop(ctx context.Context, cs *clientState, f *clientFlags, log *slog.Logger, seen messaging.SeenStore, handle func(messaging.Envelope) error) error {
	const maxBackoff = 30 * time.Second
	backoff := 500 * time.Millisecond
	for ctx.Err() == nil {
		s, ep, err := connect(ctx, cs.key, cs.gateway, cs.info.Padding, cs.info.Endpoints, f, log)
		if err == nil {
			log.Info("listening", "transport", ep.Transport)
			backoff = 500 * time.Millisecond
			err = messagingSession(ctx, s, func(ctx context.Context, c *messaging.Client) error {
				return c.Listen(ctx, handle, seen)
			})
			if err == nil || ctx.Err() != nil {
				if ctx.Err() != nil {
					return nil
				}
				err = errors.New("the gateway closed the session")
			}
			var handlerErr *handleError
			if errors.As(err, &handlerErr) {
				return handlerErr.err
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		msg := "connection lost; reconnecting"
		if errors.Is(err, client.ErrNoEndpoint) {
			msg = "cannot connect; retrying"
		}
		log.Warn(msg, "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(2*backoff, maxBackoff)
	}
	return nil
}

// terminalText returns s, a sender's text, safe to print on a terminal:
// control characters (escape sequences, carriage returns, backspaces),
// Unicode's bidirectional and line controls and bytes that are not UTF-8
// appear as Go escapes (\x1b, \u202e), and every line after the first is
// indented with a tab. So a message can neither drive the terminal nor
// show lines that pass for other messages, whose lines start with a date.
func terminalText(s string) string {
	var b strings.Builder
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[0])
		case r == '\n':
			b.WriteString("\n\t")
		case r == '\t':
			b.WriteRune(r)
		case unicode.IsControl(r) || hiddenControl(r):
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[:n])
		}
		s = s[n:]
	}
	return b.String()
}

// hiddenControl reports whether r is a format character that reorders or
// breaks the text around it: the bidirectional marks, embeddings,
// overrides and isolates, and the line and paragraph separators.
func hiddenControl(r rune) bool {
	return unicode.In(r, unicode.Bidi_Control, unicode.Zl, unicode.Zp)
}

// handleError marks an error of the local message handler (such as a closed
// standard output), which ends listen instead of reconnecting.
type handleError struct{ err error }

func (e *handleError) Error() string { return e.err.Error() }
func (e *handleError) Unwrap() error { return e.err }

// gatewayError turns an Error frame from the gateway into its human text,
// keeping the error matchable.
func gatewayError(err error) error {
	var pe *messaging.ProblemError
	if errors.As(err, &pe) && pe.Detail != "" {
		return &detailError{msg: pe.Detail, err: err}
	}
	return err
}

type detailError struct {
	msg string
	err error
}

func (e *detailError) Error() string { return e.msg }
func (e *detailError) Unwrap() error { return e.err }
