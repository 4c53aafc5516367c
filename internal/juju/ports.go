package juju

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// Port is a port or port range as open-port and opened-ports spell it: "80/tcp",
// "8000-8100/udp", "icmp". From == To for a single port; ICMP has no numbers.
type Port struct {
	From, To int
	Protocol string // "tcp", "udp" or "icmp"
}

// TCP is a single TCP port.
func TCP(port int) Port { return Port{From: port, To: port, Protocol: "tcp"} }

func (p Port) String() string {
	if p.Protocol == "icmp" {
		return "icmp"
	}
	if p.From == p.To {
		return fmt.Sprintf("%d/%s", p.From, p.Protocol)
	}
	return fmt.Sprintf("%d-%d/%s", p.From, p.To, p.Protocol)
}

// ParsePort parses "80", "80/tcp", "53/udp", "8000-8100/tcp" or "icmp". The protocol defaults to
// tcp, as open-port's does.
func ParsePort(s string) (Port, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "icmp" {
		return Port{Protocol: "icmp"}, nil
	}
	nums, proto, found := strings.Cut(s, "/")
	if !found {
		proto = "tcp"
	}
	if proto != "tcp" && proto != "udp" {
		return Port{}, fmt.Errorf("invalid port %q: protocol must be tcp, udp or icmp", s)
	}
	fromS, toS, isRange := strings.Cut(nums, "-")
	if !isRange {
		toS = fromS
	}
	from, err1 := strconv.Atoi(fromS)
	to, err2 := strconv.Atoi(toS)
	if err1 != nil || err2 != nil || from < 1 || to > 65535 || from > to {
		return Port{}, fmt.Errorf("invalid port %q: want N, N/proto, N-M/proto (1-65535) or icmp", s)
	}
	return Port{From: from, To: to, Protocol: proto}, nil
}

// OpenPort opens p on this unit's machine. Committed when the hook exits 0; effective only while
// the application is exposed.
func (c *Client) OpenPort(ctx context.Context, p Port) error {
	if _, err := c.run(ctx, toolOpenPort, []string{p.String()}, nil); err != nil {
		return fmt.Errorf("opening port %s: %w", p, err)
	}
	return nil
}

// ClosePort closes p. Committed when the hook exits 0.
func (c *Client) ClosePort(ctx context.Context, p Port) error {
	if _, err := c.run(ctx, toolClosePort, []string{p.String()}, nil); err != nil {
		return fmt.Errorf("closing port %s: %w", p, err)
	}
	return nil
}

// OpenedPorts returns the ports opened by this unit as committed before this hook: ports opened
// or closed earlier in the same hook are not reflected (contract §2.4).
func (c *Client) OpenedPorts(ctx context.Context) ([]Port, error) {
	var raw []string
	if err := c.runJSON(ctx, toolOpenedPorts, []string{formatJSON}, &raw); err != nil {
		return nil, fmt.Errorf("listing opened ports: %w", err)
	}
	ports := make([]Port, 0, len(raw))
	for _, s := range raw {
		// With --endpoints Juju appends " (ep, ...)"; we never pass it, but tolerate it.
		s, _, _ = strings.Cut(s, " ")
		p, err := ParsePort(s)
		if err != nil {
			return nil, fmt.Errorf("listing opened ports: %w", err)
		}
		ports = append(ports, p)
	}
	return ports, nil
}
