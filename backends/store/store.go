// Package store holds CommuCat's durable state: users, their devices,
// single-use registration codes, the gateway's store-and-forward inbox and
// the client's record of messages it has already shown.
//
// Store is the one contract every implementation satisfies; consumers
// (backends/messaging, cmd/commucat) define narrower interfaces of the
// methods they call. SQLite is the embedded default (OpenSQLite); a
// PostgreSQL implementation can follow by passing the conformance suite in
// backends/store/storetest.
//
// Times are stored with millisecond precision: a time read back equals the
// time written truncated to the millisecond.
package store

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors. Implementations wrap them (errors.Is works) and add
// context to the message.
var (
	// ErrNotFound means the user, device or message does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrNameTaken means a user with that name already exists.
	ErrNameTaken = errors.New("store: name already taken")
	// ErrCodeUnknown means no registration code has that hash.
	ErrCodeUnknown = errors.New("store: registration code unknown")
	// ErrCodeUsed means the registration code was already used.
	ErrCodeUsed = errors.New("store: registration code already used")
	// ErrCodeExpired means the registration code expired before use.
	ErrCodeExpired = errors.New("store: registration code expired")
	// ErrQuotaExceeded means the recipient's inbox is full.
	ErrQuotaExceeded = errors.New("store: inbox quota exceeded")
	// ErrDuplicate means a unique item (a code hash, a device id or a
	// device key) already exists.
	ErrDuplicate = errors.New("store: duplicate")
	// ErrInvalid means an argument is out of range, such as an empty or
	// too long name.
	ErrInvalid = errors.New("store: invalid argument")
	// ErrClosed means the store was closed.
	ErrClosed = errors.New("store: closed")
)

// MaxNameLen is the longest user name in bytes; names are 1..MaxNameLen
// bytes. Which bytes are allowed is the caller's policy.
const MaxNameLen = 64

// DefaultPendingLimit is the number of messages Pending returns when its
// limit is zero or negative.
const DefaultPendingLimit = 100

// User is a registered user.
type User struct {
	ID      int64
	Name    string
	Created time.Time
}

// Device is one device of a user, identified to the gateway by its Noise
// static public key.
type Device struct {
	ID          [16]byte
	UserID      int64
	Key         [32]byte // Noise static public key, unique
	Certificate []byte   // the certificate the gateway issued, or nil
	Created     time.Time
}

// Message is one message waiting in a recipient's inbox.
type Message struct {
	ID       [16]byte // chosen by the sender; unique per sender
	From     int64    // sender's user id
	FromName string   // sender's name; filled by Pending, ignored by Enqueue
	To       int64    // recipient's user id
	Body     []byte
	Sent     time.Time // the sender's clock
	Stored   time.Time // the gateway's clock when it accepted the message
	Expires  time.Time // the message is dropped at or after this time
}

// Store is CommuCat's durable state. Every method is safe for concurrent
// use, also by several processes sharing one database, and takes a context
// that bounds the call.
type Store interface {
	// AddCode stores the SHA-256 hash of a registration code (never the
	// code) valid until expires. A hash that exists is ErrDuplicate.
	AddCode(ctx context.Context, hash [32]byte, expires time.Time) error

	// Register consumes a registration code and creates a user with its
	// first device, all in one transaction. The code must exist
	// (ErrCodeUnknown), be unused (ErrCodeUsed) and expire after now
	// (ErrCodeExpired); the name must be free (ErrNameTaken) and the device
	// id and key new (ErrDuplicate). On any error nothing changes, so the
	// code stays usable. device.UserID is ignored; a zero device.Created
	// becomes now.
	Register(ctx context.Context, codeHash [32]byte, name string, device Device, now time.Time) (User, error)

	// SetCertificate replaces a device's certificate (ErrNotFound if the
	// device does not exist).
	SetCertificate(ctx context.Context, deviceID [16]byte, cert []byte) error

	// DeviceByKey finds a device by its static key, with its user
	// (ErrNotFound).
	DeviceByKey(ctx context.Context, key [32]byte) (Device, User, error)

	// UserByName finds a user by exact name (ErrNotFound).
	UserByName(ctx context.Context, name string) (User, error)

	// Enqueue stores m in the inbox of m.To. It is idempotent on
	// (m.From, m.ID) until the stored message expires, even after it was
	// delivered and acknowledged: a resubmission returns dup=true and
	// stores nothing (even if the inbox is full). Otherwise, if quota > 0
	// and the recipient already holds quota undelivered, unexpired messages
	// (expiring after m.Stored), it refuses with ErrQuotaExceeded. Unknown
	// users are ErrNotFound.
	Enqueue(ctx context.Context, m Message, quota int) (dup bool, err error)

	// Pending returns up to limit unexpired messages (Expires after now)
	// for the user, oldest first (in the order they were stored), with
	// FromName filled. A limit <= 0 means DefaultPendingLimit.
	Pending(ctx context.Context, userID int64, now time.Time, limit int) ([]Message, error)

	// Ack deletes the delivered message id from userID's own inbox and
	// reports whether there was one; it never touches another user's
	// message. Implementations may keep a bodiless record of the message
	// until it expires, for Enqueue's duplicate detection.
	Ack(ctx context.Context, userID, fromID int64, id [16]byte) (bool, error)

	// PurgeExpired deletes messages (and records of acknowledged ones)
	// that expire at or before now and returns how many it deleted.
	PurgeExpired(ctx context.Context, now time.Time) (int, error)

	// MarkSeen records, for a client's duplicate suppression, that the
	// message id from sender from was shown, and reports whether this is
	// the first time.
	MarkSeen(ctx context.Context, from string, id [16]byte, now time.Time) (firstTime bool, err error)

	// PurgeSeen forgets seen-message records older than before and returns
	// how many it deleted. Keep them at least as long as the gateway keeps
	// messages (its inbox TTL), or a late re-delivery is shown twice.
	PurgeSeen(ctx context.Context, before time.Time) (int, error)

	// Close releases the store. It is idempotent; other methods fail with
	// ErrClosed afterwards.
	Close() error
}
