package audit

import (
	"errors"
	"fmt"
)

// What a non-privileged action does when its record cannot be made
// durable (Settings.OnFailure). Privileged actions always fail closed.
const (
	OnFailureDeny          = "deny"
	OnFailureAllowAndAlert = "allow-and-alert"
)

// Settings are the cluster's audit settings (`unum audit configure`),
// stored by the control plane and handed to every node in its heartbeat
// answers. A Configure replaces all of them.
type Settings struct {
	// OnFailure is OnFailureDeny (the default, also for "") or
	// OnFailureAllowAndAlert.
	OnFailure string `json:"on_failure"`
	// Retention: entries older than RetentionSeconds (0: kept whatever
	// their age), and the oldest entries beyond RetentionBytes of event
	// data (0: no limit), are pruned, never past the newest witnessed
	// checkpoint.
	RetentionSeconds int64 `json:"retention_seconds,omitempty"`
	RetentionBytes   int64 `json:"retention_bytes,omitempty"`
}

// DefaultSettings are in force until an operator configures others.
func DefaultSettings() Settings { return Settings{OnFailure: OnFailureDeny} }

// Normalize fills in the default of an empty OnFailure and validates.
func (s Settings) Normalize() (Settings, error) {
	if s.OnFailure == "" {
		s.OnFailure = OnFailureDeny
	}
	switch {
	case s.OnFailure != OnFailureDeny && s.OnFailure != OnFailureAllowAndAlert:
		return s, fmt.Errorf("on_failure %q: want %q or %q", s.OnFailure, OnFailureDeny, OnFailureAllowAndAlert)
	case s.RetentionSeconds < 0:
		return s, errors.New("retention_seconds must not be negative")
	case s.RetentionBytes < 0:
		return s, errors.New("retention_bytes must not be negative")
	}
	return s, nil
}
