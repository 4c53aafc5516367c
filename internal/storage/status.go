package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Status is what an operator needs to see about an install root.
type Status struct {
	Root          string
	Installed     string // version behind current ("" when none)
	MarkerVersion string // content of .installed_version ("" when absent)
	Current       string // target of current
	Previous      string // target of previous
	Versions      []VersionDir
	LockHeld      bool
	LockHolder    string // lock file content: the holder, or the last one when free
	SharedMarker  bool   // .lxc_shared_storage present
	Records       map[string]string
	Staging       []string // leftovers of interrupted installs
	Legacy        []string // directories moved aside from the old charm
	Disk          Disk
	// Problems: where the root disagrees with current (see Store.Problems).
	Problems []string
	// Refused describes the release Install refuses to download again ("" when none).
	Refused string
}

// VersionDir is one entry of versions/.
type VersionDir struct {
	Name    string
	Version string
	Bytes   int64
}

// Disk is the statfs of the filesystem holding Root.
type Disk struct {
	TotalBytes, FreeBytes, AvailBytes uint64
	ReadOnly                          bool
}

// Status inspects Root without taking the lock and without writing.
func (s *Store) Status() (Status, error) {
	st := Status{Root: s.opts.Root}
	if fi, err := os.Stat(s.opts.Root); err != nil || !fi.IsDir() {
		if err == nil {
			err = errors.New("not a directory")
		}
		return st, &UnavailableError{Path: s.opts.Root, Err: err}
	}
	var err error
	if st.Installed, err = s.Installed(); err != nil {
		var c *CorruptError
		if !errors.As(err, &c) {
			return st, err
		}
		st.Installed = "(damaged: " + c.Reason + ")"
	}
	if st.MarkerVersion, err = s.readMarker(); err != nil {
		return st, err
	}
	st.Current, _ = os.Readlink(s.path(CurrentLink))
	st.Previous, _ = os.Readlink(s.path(PreviousLink))
	if ents, err := os.ReadDir(s.path(VersionsDir)); err == nil {
		for _, e := range ents {
			st.Versions = append(st.Versions, VersionDir{Name: e.Name(), Version: versionOfDir(e.Name()), Bytes: duBytes(s.path(VersionsDir, e.Name()))})
		}
	}
	if st.LockHeld, st.LockHolder, err = s.lockHolder(); err != nil {
		return st, err
	}
	_, err = os.Stat(s.path(SharedMarkerName))
	st.SharedMarker = err == nil
	if st.Records, err = s.records(); err != nil {
		return st, err
	}
	for _, d := range []struct {
		dir string
		out *[]string
	}{{StagingDir, &st.Staging}, {LegacyDir, &st.Legacy}} {
		if ents, err := os.ReadDir(s.path(d.dir)); err == nil {
			for _, e := range ents {
				*d.out = append(*d.out, e.Name())
			}
		}
	}
	if st.Problems, err = s.Problems(); err != nil {
		return st, err
	}
	if r := s.readRefusal(); r != nil {
		st.Refused = fmt.Sprintf("%s from %s at %s: %s (remove %s to retry it)", r.Version, r.Source, r.At.Format(time.RFC3339), r.Reason, s.path(RefusalName))
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(s.opts.Root, &sfs); err == nil {
		bs := uint64(sfs.Bsize)
		st.Disk = Disk{TotalBytes: sfs.Blocks * bs, FreeBytes: sfs.Bfree * bs, AvailBytes: sfs.Bavail * bs, ReadOnly: sfs.Flags&unix.ST_RDONLY != 0}
	}
	return st, nil
}

func duBytes(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

func human(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// String renders the status for operators (the `storage status` action).
func (st Status) String() string {
	var b strings.Builder
	or := func(s, def string) string {
		if s == "" {
			return def
		}
		return s
	}
	fmt.Fprintf(&b, "install root:       %s\n", st.Root)
	fmt.Fprintf(&b, "installed version:  %s\n", or(st.Installed, "none"))
	fmt.Fprintf(&b, ".installed_version: %s\n", or(st.MarkerVersion, "absent"))
	fmt.Fprintf(&b, "current:            %s\n", or(st.Current, "none"))
	fmt.Fprintf(&b, "previous:           %s\n", or(st.Previous, "none"))
	fmt.Fprintf(&b, "versions on disk:   %d\n", len(st.Versions))
	for _, v := range st.Versions {
		mark := ""
		if filepath.Base(st.Current) == v.Name {
			mark = " (current)"
		} else if filepath.Base(st.Previous) == v.Name {
			mark = " (previous)"
		}
		fmt.Fprintf(&b, "  %-28s %10s%s\n", v.Name, human(uint64(v.Bytes)), mark)
	}
	if st.LockHeld {
		fmt.Fprintf(&b, "install lock:       held by %s\n", or(st.LockHolder, "unknown holder"))
	} else {
		if st.LockHolder != "" {
			fmt.Fprintf(&b, "install lock:       free (last held by %s)\n", st.LockHolder)
		} else {
			fmt.Fprintf(&b, "install lock:       free\n")
		}
	}
	fmt.Fprintf(&b, "shared marker:      %v\n", st.SharedMarker)
	units := make([]string, 0, len(st.Records))
	for u := range st.Records {
		units = append(units, u)
	}
	sort.Strings(units)
	fmt.Fprintf(&b, "running versions:   %d unit(s) recorded\n", len(units))
	for _, u := range units {
		fmt.Fprintf(&b, "  %-28s %s\n", u, st.Records[u])
	}
	if len(st.Staging) > 0 {
		fmt.Fprintf(&b, "interrupted installs: %s (removed by the next install)\n", strings.Join(st.Staging, ", "))
	}
	if len(st.Legacy) > 0 {
		fmt.Fprintf(&b, "legacy dirs moved aside: %s\n", strings.Join(st.Legacy, ", "))
	}
	if st.Refused != "" {
		fmt.Fprintf(&b, "refused release:    %s\n", st.Refused)
	}
	for _, p := range st.Problems {
		fmt.Fprintf(&b, "DISAGREES:          %s (the installing unit repairs it at its next hook)\n", p)
	}
	ro := ""
	if st.Disk.ReadOnly {
		ro = ", read-only"
	}
	fmt.Fprintf(&b, "disk:               %s free of %s%s\n", human(st.Disk.AvailBytes), human(st.Disk.TotalBytes), ro)
	return b.String()
}
