package node

import (
	"errors"
	"fmt"
	"os"

	"github.com/unumos/unum/audit"
)

// auditPublicKeyset loads the audit checkpoint keyset at path, creating
// it when there is none, and returns its public half.
func auditPublicKeyset(path string) ([]byte, error) {
	h, err := audit.LoadSigningKeyset(path)
	if errors.Is(err, os.ErrNotExist) {
		if h, err = audit.NewSigningKeyset(); err == nil {
			err = audit.WriteSigningKeyset(path, h)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	return audit.PublicKeysetOf(h)
}
