// Package backup owns the format of a unum backup archive: writing it as a
// stream and verifying it before anything of it is used.
//
// An archive is a POSIX tar file (archive/tar) of regular files, in order:
//
//	ca/..., bundle.pem           the serving control node's CA material:
//	                             certificates, and keys still sealed under
//	                             its KEK exactly as they are on its disk
//	etcd/snapshot.db.000000 ...  etcd's snapshot (clientv3 Maintenance),
//	                             cut into chunks of at most ChunkSize so the
//	                             archive streams without a temporary file
//	                             (a tar header needs the size up front)
//	manifest.json                Manifest: format, trust domain, backup
//	                             time, the node, the etcd revision, and the
//	                             name, size and SHA-256 of every member above
//	manifest.tag                 the manifest's SHA-256 sealed with the KEK
//	                             (Tink AEAD, associated data TagLabel)
//
// The manifest comes last because only then are the hashes known. The tag
// makes the archive tamper-evident to anyone holding the KEK: hashes alone
// catch corruption, not a forger who rewrites members and manifest alike.
//
// Invariants: Extract writes nothing outside its staging folder, accepts
// only the member names above, refuses duplicates, links, oversized members,
// data after the tag, and returns a manifest only when the tag opens under
// the given KEK, the tag matches the manifest, and every member matches the
// manifest. Nothing secret is in clear: the node's plain node key, the etcd
// member key and the etcd CA are never part of an archive.
//
// Imported by control (Backup.Create), node (restore) and internal/cli.
package backup
