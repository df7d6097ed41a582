// Package storetest is the conformance suite every store.Store
// implementation passes: SQLite today, PostgreSQL later.
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) storetest.Opener {
//			path := filepath.Join(t.TempDir(), "db")
//			return func() (store.Store, error) { return store.OpenSQLite(path) }
//		})
//	}
package storetest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commucat/commucat/backends/store"
	"github.com/google/go-cmp/cmp"
)

// Opener opens a new handle on one database. Every call returns an
// independent handle with its own connections, as a second process would
// have. The suite closes every handle it opens.
type Opener func() (store.Store, error)

// T0 is the suite's clock origin, a whole millisecond.
var T0 = time.Date(2031, 3, 14, 15, 9, 26, 535_000_000, time.UTC)

// Run runs the conformance suite. newDB is called once per subtest and
// returns an Opener for a fresh, empty database.
func Run(t *testing.T, newDB func(t *testing.T) Opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"AddCode", testAddCode},
		{"Register", testRegister},
		{"RegisterNameTakenKeepsCode", testRegisterNameTakenKeepsCode},
		{"Devices", testDevices},
		{"Enqueue", testEnqueue},
		{"EnqueueIdempotent", testEnqueueIdempotent},
		{"Quota", testQuota},
		{"PendingExpiry", testPendingExpiry},
		{"Ack", testAck},
		{"PurgeExpired", testPurgeExpired},
		{"Seen", testSeen},
		{"ConcurrentEnqueue", testConcurrentEnqueue},
		{"ConcurrentResubmit", testConcurrentResubmit},
		{"TwoHandles", testTwoHandles},
		{"Reopen", testReopen},
		{"Closed", testClosed},
		{"Canceled", testCanceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newDB(t)) })
	}
}

// Open opens a handle and closes it when the test ends.
func Open(t *testing.T, open Opener) store.Store {
	t.Helper()
	s, err := open()
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

// Rand16 returns 16 random bytes, for message and device ids.
func Rand16() (b [16]byte) {
	rand.Read(b[:])
	return b
}

// Rand32 returns 32 random bytes, for keys.
func Rand32() (b [32]byte) {
	rand.Read(b[:])
	return b
}

// NewDevice returns a device with random id and key.
func NewDevice() store.Device {
	return store.Device{ID: Rand16(), Key: Rand32(), Certificate: []byte("cert")}
}

// AddUser registers a user through a fresh registration code.
func AddUser(t *testing.T, s store.Store, name string) (store.User, store.Device) {
	t.Helper()
	ctx := context.Background()
	code := sha256.Sum256([]byte("code for " + name))
	if err := s.AddCode(ctx, code, T0.Add(time.Hour)); err != nil {
		t.Fatalf("AddCode: %v", err)
	}
	d := NewDevice()
	u, err := s.Register(ctx, code, name, d, T0)
	if err != nil {
		t.Fatalf("Register %q: %v", name, err)
	}
	d.UserID, d.Created = u.ID, T0
	return u, d
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: err = %v, want %v", what, err, want)
	}
}

func msg(from, to store.User, body string, stored time.Time) store.Message {
	return store.Message{
		ID: Rand16(), From: from.ID, To: to.ID, Body: []byte(body),
		Sent: stored.Add(-time.Second), Stored: stored, Expires: stored.Add(time.Hour),
	}
}

// bodies returns the bodies of ms as strings, for diffs.
func bodies(ms []store.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = string(m.Body)
	}
	return out
}

func enqueue(t *testing.T, s store.Store, m store.Message, quota int) {
	t.Helper()
	dup, err := s.Enqueue(context.Background(), m, quota)
	if err != nil || dup {
		t.Fatalf("Enqueue(%q) = %v, %v; want false, nil", m.Body, dup, err)
	}
}

func pending(t *testing.T, s store.Store, u store.User, now time.Time) []store.Message {
	t.Helper()
	ms, err := s.Pending(context.Background(), u.ID, now, 0)
	if err != nil {
		t.Fatalf("Pending: %v", err)
	}
	return ms
}

func testAddCode(t *testing.T, open Opener) {
	s := Open(t, open)
	ctx := context.Background()
	h := sha256.Sum256([]byte("code"))
	if err := s.AddCode(ctx, h, T0.Add(time.Hour)); err != nil {
		t.Fatalf("AddCode: %v", err)
	}
	wantErr(t, "AddCode again", s.AddCode(ctx, h, T0.Add(time.Hour)), store.ErrDuplicate)
}

func testRegister(t *testing.T, open Opener) {
	s := Open(t, open)
	ctx := context.Background()
	add := func(code string, expires time.Time) [32]byte {
		h := sha256.Sum256([]byte(code))
		if err := s.AddCode(ctx, h, expires); err != nil {
			t.Fatalf("AddCode: %v", err)
		}
		return h
	}
	good := add("good", T0.Add(time.Minute))
	used := add("used", T0.Add(time.Minute))
	expired := add("expired", T0.Add(-time.Minute))
	boundary := add("boundary", T0)
	other := add("other", T0.Add(time.Minute))
	if _, err := s.Register(ctx, used, "first", NewDevice(), T0); err != nil {
		t.Fatalf("Register: %v", err)
	}
	taken := NewDevice()
	if _, err := s.Register(ctx, add("taken-device", T0.Add(time.Minute)), "owner", taken, T0); err != nil {
		t.Fatalf("Register: %v", err)
	}
	tests := []struct {
		name   string
		code   [32]byte
		user   string
		device store.Device
		want   error
	}{
		{"unknown code", sha256.Sum256([]byte("nope")), "u1", NewDevice(), store.ErrCodeUnknown},
		{"used code", used, "u2", NewDevice(), store.ErrCodeUsed},
		{"expired code", expired, "u3", NewDevice(), store.ErrCodeExpired},
		{"expires now", boundary, "u4", NewDevice(), store.ErrCodeExpired},
		{"name taken", other, "first", NewDevice(), store.ErrNameTaken},
		{"empty name", other, "", NewDevice(), store.ErrInvalid},
		{"long name", other, strings.Repeat("n", store.MaxNameLen+1), NewDevice(), store.ErrInvalid},
		{"device key taken", other, "u5", store.Device{ID: Rand16(), Key: taken.Key}, store.ErrDuplicate},
		{"device id taken", other, "u6", store.Device{ID: taken.ID, Key: Rand32()}, store.ErrDuplicate},
		{"ok", good, "alice", NewDevice(), nil},
		{"longest name", other, strings.Repeat("é", store.MaxNameLen/2), NewDevice(), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := s.Register(ctx, tt.code, tt.user, tt.device, T0)
			if tt.want != nil {
				wantErr(t, "Register", err, tt.want)
				return
			}
			if err != nil {
				t.Fatalf("Register: %v", err)
			}
			if diff := cmp.Diff(store.User{ID: u.ID, Name: tt.user, Created: T0}, u); diff != "" || u.ID == 0 {
				t.Errorf("Register user (-want +got, id %d):\n%s", u.ID, diff)
			}
			d, du, err := s.DeviceByKey(ctx, tt.device.Key)
			if err != nil {
				t.Fatalf("DeviceByKey: %v", err)
			}
			want := tt.device
			want.UserID, want.Created = u.ID, T0
			if diff := cmp.Diff(want, d); diff != "" {
				t.Errorf("DeviceByKey device (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(u, du); diff != "" {
				t.Errorf("DeviceByKey user (-want +got):\n%s", diff)
			}
			byName, err := s.UserByName(ctx, tt.user)
			if err != nil {
				t.Fatalf("UserByName: %v", err)
			}
			if diff := cmp.Diff(u, byName); diff != "" {
				t.Errorf("UserByName (-want +got):\n%s", diff)
			}
			_, err = s.Register(ctx, tt.code, "second", NewDevice(), T0)
			wantErr(t, "Register with the same code again", err, store.ErrCodeUsed)
		})
	}
}

func testRegisterNameTakenKeepsCode(t *testing.T, open Opener) {
	s := Open(t, open)
	ctx := context.Background()
	AddUser(t, s, "bob")
	h := sha256.Sum256([]byte("c"))
	if err := s.AddCode(ctx, h, T0.Add(time.Hour)); err != nil {
		t.Fatalf("AddCode: %v", err)
	}
	d := NewDevice()
	_, err := s.Register(ctx, h, "bob", d, T0)
	wantErr(t, "Register taken name", err, store.ErrNameTaken)
	if _, _, err := s.DeviceByKey(ctx, d.Key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("refused registration left a device behind: %v", err)
	}
	if _, err := s.Register(ctx, h, "bob2", d, T0); err != nil {
		t.Fatalf("Register with the code a refused registration kept: %v", err)
	}
}

func testDevices(t *testing.T, open Opener) {
	s := Open(t, open)
	ctx := context.Background()
	_, d := AddUser(t, s, "carol")
	if err := s.SetCertificate(ctx, d.ID, []byte("new cert")); err != nil {
		t.Fatalf("SetCertificate: %v", err)
	}
	got, _, err := s.DeviceByKey(ctx, d.Key)
	if err != nil {
		t.Fatalf("DeviceByKey: %v", err)
	}
	if diff := cmp.Diff("new cert", string(got.Certificate)); diff != "" {
		t.Errorf("certificate (-want +got):\n%s", diff)
	}
	wantErr(t, "SetCertificate unknown", s.SetCertificate(ctx, Rand16(), nil), store.ErrNotFound)
	_, _, err = s.DeviceByKey(ctx, Rand32())
	wantErr(t, "DeviceByKey unknown", err, store.ErrNotFound)
	_, err = s.UserByName(ctx, "nobody")
	wantErr(t, "UserByName unknown", err, store.ErrNotFound)
	_, err = s.UserByName(ctx, "CAROL")
	wantErr(t, "UserByName is exact", err, store.ErrNotFound)
}

func testEnqueue(t *testing.T, open Opener) {
	s := Open(t, open)
	ctx := context.Background()
	a, _ := AddUser(t, s, "a")
	b, _ := AddUser(t, s, "b")
	c, _ := AddUser(t, s, "c")
	first := msg(a, b, "one", T0)
	first.Body = nil
	enqueue(t, s, first, 0)
	enqueue(t, s, msg(c, b, "two", T0.Add(time.Millisecond)), 0)
	enqueue(t, s, msg(a, b, "three", T0), 0) // stored later, same clock: still after "two"
	enqueue(t, s, msg(b, a, "for a", T0), 0)
	got := pending(t, s, b, T0)
	if diff := cmp.Diff([]string{"", "two", "three"}, bodies(got)); diff != "" {
		t.Fatalf("Pending bodies (-want +got):\n%s", diff)
	}
	want := first
	want.FromName, want.Body = "a", []byte{}
	if diff := cmp.Diff(want, got[0], cmp.Comparer(func(x, y []byte) bool { return string(x) == string(y) })); diff != "" {
		t.Errorf("Pending message (-want +got):\n%s", diff)
	}
	if got[1].FromName != "c" {
		t.Errorf("FromName = %q, want c", got[1].FromName)
	}
	limited, err := s.Pending(ctx, b.ID, T0, 2)
	if err != nil {
		t.Fatalf("Pending: %v", err)
	}
	if diff := cmp.Diff([]string{"", "two"}, bodies(limited)); diff != "" {
		t.Errorf("Pending limit 2 (-want +got):\n%s", diff)
	}
	if got := pending(t, s, c, T0); len(got) != 0 {
		t.Errorf("Pending(c) = %q, want none", bodies(got))
	}
	unknown := msg(a, store.User{ID: 1 << 40}, "x", T0)
	_, err = s.Enqueue(ctx, unknown, 0)
	wantErr(t, "Enqueue to unknown user", err, store.ErrNotFound)
}

func testEnqueueIdempotent(t *testing.T, open Opener) {
	s := Open(t, open)
	ctx := context.Background()
	a, _ := AddUser(t, s, "a")
	b, _ := AddUser(t, s, "b")
	c, _ := AddUser(t, s, "c")
	m := msg(a, b, "once", T0)
	enqueue(t, s, m, 1)
	for _, tt := range []struct {
		name  string
		quota int
	}{{"no quota", 0}, {"quota full", 1}} {
		t.Run(tt.name, func(t *testing.T) {
			again := m
			again.Body = []byte("changed")
			dup, err := s.Enqueue(ctx, again, tt.quota)
			if err != nil || !dup {
				t.Fatalf("Enqueue resubmission = %v, %v; want true, nil", dup, err)
			}
		})
	}
	if diff := cmp.Diff([]string{"once"}, bodies(pending(t, s, b, T0))); diff != "" {
		t.Errorf("Pending (-want +got):\n%s", diff)
	}
	// The same id from another sender is another message.
	other := m
	other.From, other.To = c.ID, a.ID
	enqueue(t, s, other, 0)
	if n := len(pending(t, s, a, T0)); n != 1 {
		t.Errorf("Pending holds %d messages, want 1", n)
	}
	// Delivered and acknowledged, it is still a duplicate until it expires.
	if ok, err := s.Ack(ctx, b.ID, m.From, m.ID); err != nil || !ok {
		t.Fatalf("Ack = %v, %v", ok, err)
	}
	if dup, err := s.Enqueue(ctx, m, 0); err != nil || !dup {
		t.Errorf("Enqueue after Ack = %v, %v; want true, nil", dup, err)
	}
	if n := len(pending(t, s, b, T0)); n != 0 {
		t.Errorf("Pending holds %d messages, want 0", n)
	}
	if n, err := s.PurgeExpired(ctx, m.Expires); err != nil || n != 2 {
		t.Errorf("PurgeExpired = %d, %v; want 2, nil", n, err)
	}
	if dup, err := s.Enqueue(ctx, m, 0); err != nil || dup {
		t.Errorf("Enqueue after expiry = %v, %v; want false, nil", dup, err)
	}
}

func testQuota(t *testing.T, open Opener) {
	s := Open(t, open)
	ctx := context.Background()
	a, _ := AddUser(t, s, "a")
	b, _ := AddUser(t, s, "b")
	old := msg(a, b, "old", T0.Add(-2*time.Hour)) // expired by T0
	enqueue(t, s, old, 2)
	enqueue(t, s, msg(a, b, "1", T0), 2)
	enqueue(t, s, msg(a, b, "2", T0), 2)
	_, err := s.Enqueue(ctx, msg(a, b, "3", T0), 2)
	wantErr(t, "Enqueue over quota", err, store.ErrQuotaExceeded)
	enqueue(t, s, msg(b, a, "other inbox", T0), 2)
	enqueue(t, s, msg(a, b, "unlimited", T0), 0)
	first := pending(t, s, b, T0)[0]
	if ok, err := s.Ack(ctx, b.ID, first.From, first.ID); err != nil || !ok {
		t.Fatalf("Ack = %v, %v", ok, err)
	}
	_, err = s.Enqueue(ctx, msg(a, b, "4", T0), 2)
	wantErr(t, "Enqueue over quota", err, store.ErrQuotaExceeded)
	enqueue(t, s, msg(a, b, "5", T0), 3) // the acknowledged message no longer counts
	if diff := cmp.Diff([]string{"2", "unlimited", "5"}, bodies(pending(t, s, b, T0))); diff != "" {
		t.Errorf("Pending (-want +got):\n%s", diff)
	}
}

func testPendingExpiry(t *testing.T, open Opener) {
	s := Open(t, open)
	a, _ := AddUser(t, s, "a")
	b, _ := AddUser(t, s, "b")
	m := msg(a, b, "soon gone", T0)
	enqueue(t, s, m, 0)
	tests := []struct {
		name string
		now  time.Time
		want []string
	}{
		{"before", m.Expires.Add(-time.Millisecond), []string{"soon gone"}},
		{"at expiry", m.Expires, []string{}},
		{"after", m.Expires.Add(time.Hour), []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, bodies(pending(t, s, b, tt.now))); diff != "" {
				t.Errorf("Pending (-want +got):\n%s", diff)
			}
		})
	}
}

func testAck(t *testing.T, open Opener) {
	s := Open(t, open)
	ctx := context.Background()
	a, _ := AddUser(t, s, "a")
	b, _ := AddUser(t, s, "b")
	c, _ := AddUser(t, s, "c")
	m := msg(a, b, "for b", T0)
	enqueue(t, s, m, 0)
	// The same id from another sender is another message, which an ack
	// of the first must leave alone.
	same := msg(c, b, "also for b", T0)
	same.ID = m.ID
	enqueue(t, s, same, 0)
	tests := []struct {
		name string
		user store.User
		from int64
		id   [16]byte
		want bool
		left int
	}{
		{"sender cannot ack", a, a.ID, m.ID, false, 2},
		{"stranger cannot ack", c, a.ID, m.ID, false, 2},
		{"unknown id", b, a.ID, Rand16(), false, 2},
		{"wrong sender", b, b.ID, m.ID, false, 2},
		{"recipient acks", b, a.ID, m.ID, true, 1},
		{"second ack", b, a.ID, m.ID, false, 1},
		{"the same id from the other sender", b, c.ID, m.ID, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Ack(ctx, tt.user.ID, tt.from, tt.id)
			if err != nil || got != tt.want {
				t.Fatalf("Ack = %v, %v; want %v, nil", got, err, tt.want)
			}
			if n := len(pending(t, s, b, T0)); n != tt.left {
				t.Errorf("after Ack, %d messages pending, want %d", n, tt.left)
			}
		})
	}
}

func testPurgeExpired(t *testing.T, open Opener) {
	s := Open(t, open)
	ctx := context.Background()
	a, _ := AddUser(t, s, "a")
	b, _ := AddUser(t, s, "b")
	for i := range 3 {
		enqueue(t, s, msg(a, b, fmt.Sprint("old", i), T0.Add(-time.Hour)), 0) // expire at T0
	}
	enqueue(t, s, msg(a, b, "fresh", T0), 0)
	n, err := s.PurgeExpired(ctx, T0)
	if err != nil || n != 3 {
		t.Fatalf("PurgeExpired = %d, %v; want 3, nil", n, err)
	}
	if diff := cmp.Diff([]string{"fresh"}, bodies(pending(t, s, b, T0.Add(-2*time.Hour)))); diff != "" {
		t.Errorf("Pending after purge (-want +got):\n%s", diff)
	}
	if n, err := s.PurgeExpired(ctx, T0); err != nil || n != 0 {
		t.Errorf("PurgeExpired again = %d, %v; want 0, nil", n, err)
	}
}

func testSeen(t *testing.T, open Opener) {
	s := Open(t, open)
	ctx := context.Background()
	id := Rand16()
	tests := []struct {
		name string
		from string
		id   [16]byte
		now  time.Time
		want bool
	}{
		{"first", "alice", id, T0, true},
		{"again", "alice", id, T0.Add(time.Hour), false},
		{"other sender", "bob", id, T0, true},
		{"other id", "alice", Rand16(), T0.Add(2 * time.Hour), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.MarkSeen(ctx, tt.from, tt.id, tt.now)
			if err != nil || got != tt.want {
				t.Fatalf("MarkSeen = %v, %v; want %v, nil", got, err, tt.want)
			}
		})
	}
	n, err := s.PurgeSeen(ctx, T0.Add(time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("PurgeSeen = %d, %v; want 2, nil", n, err)
	}
	if first, err := s.MarkSeen(ctx, "alice", id, T0); err != nil || !first {
		t.Errorf("MarkSeen after purge = %v, %v; want true, nil", first, err)
	}
}

// testConcurrentEnqueue races more submissions than the quota allows:
// exactly quota of them are stored.
func testConcurrentEnqueue(t *testing.T, open Opener) {
	s := Open(t, open)
	ctx := context.Background()
	a, _ := AddUser(t, s, "a")
	b, _ := AddUser(t, s, "b")
	const workers, each, quota = 8, 10, 50
	var wg sync.WaitGroup
	var mu sync.Mutex
	var stored, refused int
	var errs []error
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				_, err := s.Enqueue(ctx, msg(a, b, fmt.Sprintf("%d/%d", w, i), T0), quota)
				mu.Lock()
				switch {
				case err == nil:
					stored++
				case errors.Is(err, store.ErrQuotaExceeded):
					refused++
				default:
					errs = append(errs, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("Enqueue errors: %v", errs)
	}
	if stored != quota || refused != workers*each-quota {
		t.Errorf("stored %d, refused %d; want %d, %d", stored, refused, quota, workers*each-quota)
	}
	got, err := s.Pending(ctx, b.ID, T0, 1000)
	if err != nil || len(got) != quota {
		t.Errorf("Pending = %d messages, %v; want %d", len(got), err, quota)
	}
}

// testConcurrentResubmit races copies of one message: one is stored, the
// others are duplicates.
func testConcurrentResubmit(t *testing.T, open Opener) {
	s := Open(t, open)
	a, _ := AddUser(t, s, "a")
	b, _ := AddUser(t, s, "b")
	m := msg(a, b, "same", T0)
	const workers = 8
	var wg sync.WaitGroup
	dups := make([]bool, workers)
	errs := make([]error, workers)
	for w := range workers {
		wg.Go(func() { dups[w], errs[w] = s.Enqueue(context.Background(), m, 0) })
	}
	wg.Wait()
	fresh := 0
	for w := range workers {
		if errs[w] != nil {
			t.Fatalf("Enqueue: %v", errs[w])
		}
		if !dups[w] {
			fresh++
		}
	}
	if fresh != 1 {
		t.Errorf("%d submissions stored, want 1", fresh)
	}
	if n := len(pending(t, s, b, T0)); n != 1 {
		t.Errorf("Pending holds %d messages, want 1", n)
	}
}

// testTwoHandles uses two handles on one database, as the gateway and
// `commucat invite` do.
func testTwoHandles(t *testing.T, open Opener) {
	gw := Open(t, open)
	inv := Open(t, open)
	ctx := context.Background()
	a, _ := AddUser(t, gw, "a")
	h := sha256.Sum256([]byte("from the other handle"))
	if err := inv.AddCode(ctx, h, T0.Add(time.Hour)); err != nil {
		t.Fatalf("AddCode: %v", err)
	}
	d := NewDevice()
	b, err := gw.Register(ctx, h, "b", d, T0)
	if err != nil {
		t.Fatalf("Register with a code the other handle added: %v", err)
	}
	if _, _, err := inv.DeviceByKey(ctx, d.Key); err != nil {
		t.Fatalf("DeviceByKey on the other handle: %v", err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, s := range []store.Store{gw, inv} {
		wg.Go(func() {
			for j := range 20 {
				if _, err := s.Enqueue(ctx, msg(a, b, fmt.Sprint(i, j), T0), 30); err != nil && !errors.Is(err, store.ErrQuotaExceeded) {
					errs[i] = err
					return
				}
				if err := s.AddCode(ctx, Rand32(), T0); err != nil {
					errs[i] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent writes from two handles: %v", err)
	}
	for _, s := range []store.Store{gw, inv} {
		if n := len(pending(t, s, b, T0)); n != 30 {
			t.Errorf("Pending holds %d messages, want 30 (the quota)", n)
		}
	}
	if first, err := inv.MarkSeen(ctx, "a", [16]byte{1}, T0); err != nil || !first {
		t.Fatalf("MarkSeen = %v, %v", first, err)
	}
	if first, err := gw.MarkSeen(ctx, "a", [16]byte{1}, T0); err != nil || first {
		t.Errorf("MarkSeen on the other handle = %v, %v; want false, nil", first, err)
	}
}

func testReopen(t *testing.T, open Opener) {
	ctx := context.Background()
	s, err := open()
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	a, d := AddUser(t, s, "a")
	m := msg(a, a, "note to self", T0)
	enqueue(t, s, m, 0)
	if _, err := s.MarkSeen(ctx, "a", m.ID, T0); err != nil {
		t.Fatalf("MarkSeen: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = Open(t, open)
	gotD, gotU, err := s.DeviceByKey(ctx, d.Key)
	if err != nil {
		t.Fatalf("DeviceByKey after reopen: %v", err)
	}
	if diff := cmp.Diff(d, gotD); diff != "" {
		t.Errorf("device after reopen (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(a, gotU); diff != "" {
		t.Errorf("user after reopen (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"note to self"}, bodies(pending(t, s, a, T0))); diff != "" {
		t.Errorf("Pending after reopen (-want +got):\n%s", diff)
	}
	if first, err := s.MarkSeen(ctx, "a", m.ID, T0); err != nil || first {
		t.Errorf("MarkSeen after reopen = %v, %v; want false, nil", first, err)
	}
}

func testClosed(t *testing.T, open Opener) {
	s, err := open()
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ctx := context.Background()
	_, err = s.Enqueue(ctx, store.Message{}, 0)
	wantErr(t, "Enqueue after Close", err, store.ErrClosed)
	_, err = s.Pending(ctx, 1, T0, 0)
	wantErr(t, "Pending after Close", err, store.ErrClosed)
	_, err = s.UserByName(ctx, "a")
	wantErr(t, "UserByName after Close", err, store.ErrClosed)
}

func testCanceled(t *testing.T, open Opener) {
	s := Open(t, open)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.AddCode(ctx, Rand32(), T0); !errors.Is(err, context.Canceled) {
		t.Errorf("AddCode with a canceled context: %v, want context.Canceled", err)
	}
	if _, err := s.Pending(ctx, 1, T0, 0); err == nil {
		t.Errorf("Pending with a canceled context succeeded")
	}
}
