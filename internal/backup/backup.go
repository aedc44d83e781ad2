package backup

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// FormatVersion is the archive format this package writes and reads.
const FormatVersion = 1

// Member names.
const (
	ManifestName = "manifest.json"
	TagName      = "manifest.tag"
	// TagLabel is the associated data of the manifest tag: a tag is bound
	// to its purpose, so no other KEK-sealed blob (a sealed key) passes.
	TagLabel = "unum/backup/manifest/v1"

	Bundle           = "bundle.pem"
	RootCert         = "ca/root.pem"
	RootKey          = "ca/root.key.sealed"
	IntermediateCert = "ca/intermediate.pem"
	IntermediateKey  = "ca/intermediate.key.sealed"
	JWTKey           = "ca/jwt.key.sealed"

	// snapshotChunk prefixes the snapshot chunks: etcd/snapshot.db.000000...
	snapshotChunk = "etcd/snapshot.db."
	// SnapshotFile is where Extract puts the reassembled snapshot, relative
	// to its folder.
	SnapshotFile = "etcd/snapshot.db"
)

// Size limits. Every file but the snapshot is a certificate or a sealed key;
// the snapshot is bounded by etcd's backend quota (2 GiB in storage/meta),
// with room for a raised quota.
const (
	ChunkSize       = 4 << 20
	maxFileSize     = 1 << 20
	maxSnapshotSize = 16 << 30
	maxTagSize      = 4 << 10
)

// Files are the CA files an archive may hold besides the snapshot.
var Files = []string{Bundle, RootCert, RootKey, IntermediateCert, IntermediateKey, JWTKey}

// required must be in every archive: without them no control node can be
// rebuilt (the snapshot is required separately).
var required = []string{Bundle, IntermediateCert, IntermediateKey, JWTKey}

var chunkName = regexp.MustCompile(`^etcd/snapshot\.db\.([0-9]{6})$`)

// Member is one file of the archive as the manifest lists it.
type Member struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Node is what the manifest records of the control node that served the
// backup (from its node.yaml).
type Node struct {
	Name          string   `json:"name"`
	Roles         []string `json:"roles"`
	APIAddress    string   `json:"api_address"`
	EnrollAddress string   `json:"enroll_address"`
	EtcdClientURL string   `json:"etcd_client_url"`
	EtcdPeerURL   string   `json:"etcd_peer_url"`
}

// Manifest describes an archive.
type Manifest struct {
	Format      int    `json:"format"`
	TrustDomain string `json:"trust_domain"`
	// CreatedAt is the serving node's clock read before the snapshot was
	// requested: nothing that happened after it is guaranteed to be in the
	// snapshot, so a restore treats every certificate issued after it
	// (less a margin for clock skew) as unknown to the restored state.
	CreatedAt time.Time `json:"created_at"`
	Node      Node      `json:"node"`
	// EtcdRevision is the revision read just before the snapshot: the
	// snapshot holds at least this revision.
	EtcdRevision int64    `json:"etcd_revision"`
	Members      []Member `json:"members"`
}

// Has reports whether the archive holds member name.
func (m *Manifest) Has(name string) bool {
	return slices.ContainsFunc(m.Members, func(x Member) bool { return x.Name == name })
}

// SnapshotSize is the size of the reassembled snapshot.
func (m *Manifest) SnapshotSize() int64 {
	var n int64
	for _, x := range m.Members {
		if chunkName.MatchString(x.Name) {
			n += x.Size
		}
	}
	return n
}

// validate checks everything in m that does not need the archive.
func (m *Manifest) validate() error {
	if m.Format != FormatVersion {
		return fmt.Errorf("manifest format %d: this unum reads format %d", m.Format, FormatVersion)
	}
	if _, err := spiffeid.TrustDomainFromString(m.TrustDomain); err != nil {
		return fmt.Errorf("manifest trust domain %q: %w", m.TrustDomain, err)
	}
	if m.CreatedAt.IsZero() {
		return errors.New("manifest has no created_at")
	}
	if m.Node.Name == "" {
		return errors.New("manifest names no node")
	}
	seen := map[string]bool{}
	for _, x := range m.Members {
		if !allowedName(x.Name) {
			return fmt.Errorf("manifest lists unknown member %q", x.Name)
		}
		if seen[x.Name] {
			return fmt.Errorf("manifest lists %q twice", x.Name)
		}
		seen[x.Name] = true
		if b, err := hex.DecodeString(x.SHA256); err != nil || len(b) != sha256.Size {
			return fmt.Errorf("manifest: member %q has a malformed sha256", x.Name)
		}
		if x.Size < 0 {
			return fmt.Errorf("manifest: member %q has a negative size", x.Name)
		}
	}
	for _, name := range required {
		if !seen[name] {
			return fmt.Errorf("backup holds no %s: it cannot rebuild a control node", name)
		}
	}
	if !seen[snapshotChunk+"000000"] {
		return errors.New("backup holds no etcd snapshot")
	}
	return nil
}

func allowedName(name string) bool {
	return slices.Contains(Files, name) || chunkName.MatchString(name)
}

// Sealer seals the manifest digest (the serving node's KEK).
type Sealer interface {
	Seal(plaintext, associatedData []byte) ([]byte, error)
}

// Opener opens a manifest tag (the restoring operator's KEK).
type Opener interface {
	Open(ciphertext, associatedData []byte) ([]byte, error)
}

// Writer writes an archive to a stream. It is not safe for concurrent use.
type Writer struct {
	tw      *tar.Writer
	mtime   time.Time
	members []Member
	chunks  int
	done    bool
}

// NewWriter starts an archive on w; mtime dates every member.
func NewWriter(w io.Writer, mtime time.Time) *Writer {
	return &Writer{tw: tar.NewWriter(w), mtime: mtime.UTC().Truncate(time.Second)}
}

func (w *Writer) add(name string, data []byte) error {
	if w.done {
		return errors.New("backup archive already finished")
	}
	if slices.ContainsFunc(w.members, func(x Member) bool { return x.Name == name }) {
		return fmt.Errorf("backup member %s added twice", name)
	}
	hdr := &tar.Header{Name: name, Mode: 0o600, Size: int64(len(data)), ModTime: w.mtime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	if err := w.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write backup member %s: %w", name, err)
	}
	if _, err := w.tw.Write(data); err != nil {
		return fmt.Errorf("write backup member %s: %w", name, err)
	}
	sum := sha256.Sum256(data)
	if name != ManifestName && name != TagName {
		w.members = append(w.members, Member{Name: name, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])})
	}
	return nil
}

// AddFile adds one of Files.
func (w *Writer) AddFile(name string, data []byte) error {
	if !slices.Contains(Files, name) {
		return fmt.Errorf("backup member %q is not a CA file", name)
	}
	if len(data) > maxFileSize {
		return fmt.Errorf("backup member %s: %d bytes is more than any CA file", name, len(data))
	}
	return w.add(name, data)
}

// AddSnapshot copies the etcd snapshot from r in chunks of ChunkSize; it
// holds one chunk in memory at a time.
func (w *Writer) AddSnapshot(r io.Reader) (int64, error) {
	if w.chunks > 0 {
		return 0, errors.New("backup snapshot added twice")
	}
	buf := make([]byte, ChunkSize)
	var total int64
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 || (w.chunks == 0 && err == io.EOF) {
			if total+int64(n) > maxSnapshotSize {
				return total, fmt.Errorf("etcd snapshot larger than %d bytes", int64(maxSnapshotSize))
			}
			if aerr := w.add(fmt.Sprintf("%s%06d", snapshotChunk, w.chunks), buf[:n]); aerr != nil {
				return total, aerr
			}
			w.chunks++
			total += int64(n)
		}
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			return total, nil
		case err != nil:
			return total, fmt.Errorf("read etcd snapshot: %w", err)
		}
	}
}

// Finish fills in m's members, writes the manifest and its tag sealed by s,
// and closes the archive (not the underlying writer). It returns the
// manifest as written.
func (w *Writer) Finish(m Manifest, s Sealer) (*Manifest, error) {
	m.Format = FormatVersion
	m.Members = append([]Member(nil), w.members...)
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("backup manifest: %w", err)
	}
	raw, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	raw = append(raw, '\n')
	sum := sha256.Sum256(raw)
	tag, err := s.Seal(sum[:], []byte(TagLabel))
	if err != nil {
		return nil, fmt.Errorf("seal backup manifest: %w", err)
	}
	if err := w.add(ManifestName, raw); err != nil {
		return nil, err
	}
	if err := w.add(TagName, tag); err != nil {
		return nil, err
	}
	w.done = true
	if err := w.tw.Close(); err != nil {
		return nil, fmt.Errorf("finish backup archive: %w", err)
	}
	return &m, nil
}

// ErrCorrupt wraps every refusal of an archive's content.
var ErrCorrupt = errors.New("backup archive refused")

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// scanned is what walk found in an archive.
type scanned struct {
	members  map[string]Member
	manifest []byte
	tag      []byte
}

// walk reads a whole archive, hashing every member into sink(name) (which
// may return io.Discard), and enforces the structure: regular files with
// known names, each once, chunks in order, manifest then tag last.
func walk(r io.Reader, sink func(name string) (io.Writer, error)) (*scanned, error) {
	tr := tar.NewReader(r)
	s := &scanned{members: map[string]Member{}}
	var snapTotal int64
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, corrupt("the archive is truncated")
			}
			return nil, corrupt("not a readable tar archive: %v", err)
		}
		name := hdr.Name
		switch {
		case s.tag != nil:
			return nil, corrupt("member %q after %s", name, TagName)
		case hdr.Typeflag != tar.TypeReg:
			return nil, corrupt("member %q is not a regular file", name)
		case hdr.Size < 0:
			return nil, corrupt("member %q has a negative size", name)
		}
		if _, dup := s.members[name]; dup || (name == ManifestName && s.manifest != nil) {
			return nil, corrupt("member %q appears twice", name)
		}
		switch {
		case name == ManifestName:
			if s.manifest, err = readLimited(tr, hdr.Size, maxFileSize, name); err != nil {
				return nil, err
			}
			continue
		case name == TagName:
			if s.manifest == nil {
				return nil, corrupt("%s before %s", TagName, ManifestName)
			}
			if s.tag, err = readLimited(tr, hdr.Size, maxTagSize, name); err != nil {
				return nil, err
			}
			continue
		case s.manifest != nil:
			return nil, corrupt("member %q after %s", name, ManifestName)
		case chunkName.MatchString(name):
			idx, _ := strconv.Atoi(chunkName.FindStringSubmatch(name)[1])
			if idx != countChunks(s.members) {
				return nil, corrupt("snapshot chunk %q out of order", name)
			}
			if hdr.Size > ChunkSize {
				return nil, corrupt("snapshot chunk %q larger than %d bytes", name, ChunkSize)
			}
			if snapTotal += hdr.Size; snapTotal > maxSnapshotSize {
				return nil, corrupt("etcd snapshot larger than %d bytes", int64(maxSnapshotSize))
			}
		case slices.Contains(Files, name):
			if hdr.Size > maxFileSize {
				return nil, corrupt("member %q larger than %d bytes", name, maxFileSize)
			}
		default:
			return nil, corrupt("unknown member %q", name)
		}
		dst, err := sink(name)
		if err != nil {
			return nil, err
		}
		h := sha256.New()
		n, err := io.Copy(io.MultiWriter(h, dst), tr)
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, corrupt("the archive is truncated (in %s)", name)
			}
			return nil, fmt.Errorf("read backup member %s: %w", name, err)
		}
		s.members[name] = Member{Name: name, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}
	}
	if s.manifest == nil {
		return nil, corrupt("no %s: not a unum backup, or truncated", ManifestName)
	}
	if s.tag == nil {
		return nil, corrupt("no %s: the archive is truncated", TagName)
	}
	return s, nil
}

func countChunks(members map[string]Member) int {
	n := 0
	for name := range members {
		if chunkName.MatchString(name) {
			n++
		}
	}
	return n
}

func readLimited(r io.Reader, size, limit int64, name string) ([]byte, error) {
	if size > limit {
		return nil, corrupt("member %q larger than %d bytes", name, limit)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, corrupt("the archive is truncated (in %s)", name)
		}
		return nil, fmt.Errorf("read backup member %s: %w", name, err)
	}
	return b, nil
}

// check parses the manifest and compares it with what walk found.
func (s *scanned) check() (*Manifest, error) {
	var probe struct {
		Format int `json:"format"`
	}
	if err := json.Unmarshal(s.manifest, &probe); err != nil {
		return nil, corrupt("%s: %v", ManifestName, err)
	}
	if probe.Format != FormatVersion {
		return nil, corrupt("manifest format %d: this unum reads format %d", probe.Format, FormatVersion)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(s.manifest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, corrupt("%s: %v", ManifestName, err)
	}
	if err := m.validate(); err != nil {
		return nil, corrupt("%v", err)
	}
	for _, want := range m.Members {
		got, ok := s.members[want.Name]
		if !ok {
			return nil, corrupt("member %s is listed in the manifest but missing", want.Name)
		}
		if got.Size != want.Size || got.SHA256 != want.SHA256 {
			return nil, corrupt("member %s does not match the manifest (size %d, sha256 %s; manifest: size %d, sha256 %s)",
				want.Name, got.Size, got.SHA256, want.Size, want.SHA256)
		}
	}
	if len(s.members) != len(m.Members) {
		for name := range s.members {
			if !m.Has(name) {
				return nil, corrupt("member %s is not listed in the manifest", name)
			}
		}
	}
	return &m, nil
}

// Verify reads a whole archive and checks its structure and every member
// against the manifest, without the KEK: what a client that downloaded an
// archive can check. It cannot tell a forged manifest from a true one; only
// Extract, with the KEK, can.
func Verify(r io.Reader) (*Manifest, error) {
	s, err := walk(r, func(string) (io.Writer, error) { return io.Discard, nil })
	if err != nil {
		return nil, err
	}
	return s.check()
}

// Extract verifies an archive and writes its members into dir, which must
// be an empty folder the caller owns (a staging folder it removes when
// Extract fails): CA files under their member names, the snapshot
// reassembled at SnapshotFile, every file 0600. The manifest is returned
// only after its tag opened under k and matched, and every member matched
// the manifest.
func Extract(r io.Reader, dir string, k Opener) (*Manifest, error) {
	var snap *os.File
	defer func() {
		if snap != nil {
			snap.Close()
		}
	}()
	var open []*os.File
	defer func() {
		for _, f := range open {
			f.Close()
		}
	}()
	sink := func(name string) (io.Writer, error) {
		if chunkName.MatchString(name) {
			if snap == nil {
				f, err := createIn(dir, SnapshotFile)
				if err != nil {
					return nil, err
				}
				snap = f
			}
			return snap, nil
		}
		f, err := createIn(dir, name)
		if err != nil {
			return nil, err
		}
		open = append(open, f)
		return f, nil
	}
	s, err := walk(r, sink)
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(s.manifest)
	opened, err := k.Open(s.tag, []byte(TagLabel))
	if err != nil {
		return nil, corrupt("the manifest tag does not open under this KEK: the backup was made under another key-encryption key, or it was altered")
	}
	if subtle.ConstantTimeCompare(opened, digest[:]) != 1 {
		return nil, corrupt("the manifest was altered after it was sealed")
	}
	m, err := s.check()
	if err != nil {
		return nil, err
	}
	if snap != nil {
		if err := snap.Sync(); err != nil {
			return nil, err
		}
	}
	for _, f := range open {
		if err := f.Sync(); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// createIn creates dir/name exclusively, 0600. name is one of the fixed
// member names (never taken from the archive unchecked).
func createIn(dir, name string) (*os.File, error) {
	p := filepath.Join(dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return nil, err
	}
	return os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
}
