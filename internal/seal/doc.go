// Package seal keeps private key material on disk.
//
// It owns three file kinds:
//
//   - the key-encryption key (KEK): a Tink AES256-GCM keyset stored as
//     cleartext JSON, mode 0600. It is the one secret a control node must
//     protect with file permissions alone (or keep on removable media);
//   - sealed private keys: a CA signing key (and later the audit signing key)
//     as PKCS#8 DER encrypted under the KEK, bound to a purpose label so a
//     sealed root key cannot be substituted for the intermediate key;
//   - plain private keys: a node's own SVID key, PEM PKCS#8, mode 0600. It is
//     short-lived and re-issued on rotation, so sealing it buys little.
//
// Invariants:
//
//   - every key file is written atomically (temporary file in the same
//     directory, fsync, rename, fsync of the directory) with mode 0600, so a
//     crash leaves either the old or the new file, never a torn one;
//   - every reader refuses a key file that is a symlink, not a regular file, or
//     has any group or other permission bit set, before reading a byte of it;
//     the check is made on the open descriptor, not only on the path;
//   - errors never contain key material.
//
// # Sealed key file format (v1)
//
// A sealed key file is three lines of ASCII, each ending in '\n':
//
//	unum-sealed-key v1
//	label: <label>
//	<standard base64 (RFC 4648 §4, padded) of the Tink AEAD ciphertext>
//
// The plaintext is the PKCS#8 DER of the private key. The associated data is
// the first two lines exactly as stored ("unum-sealed-key v1\nlabel: " +
// label + "\n"), so the version and the label are authenticated: changing
// either, or presenting the file under another label, makes decryption fail.
// A label is 1-128 printable ASCII characters without spaces, such as
// "unum/ca/root" or "unum/ca/intermediate". The ciphertext carries Tink's
// 5-byte key-id prefix, so a KEK keyset can later be rotated while old files
// still open.
//
// Who may import: identity/... (CA and node keys), audit/... (signing keys)
// and cmd/unum. Nothing here talks to the network.
package seal
