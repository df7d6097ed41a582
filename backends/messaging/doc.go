// Package messaging is CommuCat's store-and-forward messaging protocol,
// carried in CCP-1 frames: the payload codecs (Envelope, RegisterRequest),
// the gateway side (Service) and the client side (Client).
//
// A client registers once with a single-use code from an invite:
//
//	client                                  gateway
//	Register{code, name}            ──►     consume code, create user and device
//	                                ◄──     Certificate (or Error registration-refused)
//
// Then, on every authenticated session:
//
//	Message{id, peer=recipient, body} ──►   store in the recipient's inbox (idempotent on sender+id)
//	                                  ◄──   Ack{stored, [id]} (or Error{code, ref=id})
//	                                  ◄──   Message{id, peer=sender, body} for each inbox message
//	Ack{delivered, [id...]}           ──►   delete those messages from the inbox
//
// Delivery is at least once: a message stays in the gateway's inbox until
// the recipient acknowledges it, and is sent again on the next session or
// after a timeout. The client makes it exactly once for the user by
// recording every (sender, id) in a SeenStore before showing it.
//
// Payload layouts are documented on Envelope and RegisterRequest and in
// docs/PROTOCOL.md. The certificate travels as the raw bytes of a
// frame.Certificate payload; acknowledgements and errors use
// frame.AckPayload and frame.ErrorPayload.
package messaging
