package vip

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
)

// record is the on-disk list of addresses this agent added, so that only
// those are ever removed, also by the next run after a crash.
type record struct {
	path string
	list []recordEntry
}

type recordEntry struct {
	Link   string       `json:"link"`
	Prefix netip.Prefix `json:"prefix"`
}

// openRecord reads the record under stateDir; an unreadable one counts as empty.
func openRecord(stateDir string) *record {
	r := &record{path: filepath.Join(stateDir, "vip", "addresses.json")}

	if data, err := os.ReadFile(r.path); err == nil {
		json.Unmarshal(data, &r.list) //nolint:errcheck // a corrupt record cannot name addresses to remove
	}

	return r
}

func (r *record) entries() []recordEntry {
	return slices.Clone(r.list)
}

func (r *record) add(link string, p netip.Prefix) error {
	e := recordEntry{Link: link, Prefix: p}
	if !slices.Contains(r.list, e) {
		r.list = append(r.list, e)
	}

	return r.save()
}

func (r *record) remove(link string, p netip.Prefix) error {
	r.list = slices.DeleteFunc(r.list, func(e recordEntry) bool { return e == recordEntry{Link: link, Prefix: p} })

	return r.save()
}

// save writes atomically: a crash leaves the old or the new record, never half.
func (r *record) save() error {
	if err := os.MkdirAll(filepath.Dir(r.path), 0o700); err != nil {
		return fmt.Errorf("creating VIP record directory: %w", err)
	}

	data, err := json.Marshal(r.list)
	if err != nil {
		return fmt.Errorf("encoding VIP record: %w", err)
	}

	tmp := r.path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("writing VIP record: %w", err)
	}

	if err := os.Rename(tmp, r.path); err != nil {
		return errors.Join(fmt.Errorf("writing VIP record: %w", err), os.Remove(tmp))
	}

	return nil
}
