package bed

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// spareBase is the first host number of the addresses SpareIP hands out: machines are numbered
// from .10 up, so the top of the /24 is free unless a bed boots 190 machines.
const spareBase = 200

// SpareIP returns the n-th (0-based) address of the bed's subnet that no machine is given, for a
// machine's second address (AddAddress).
func (b *Bed) SpareIP(n int) string {
	if n < 0 || spareBase+n > 254 {
		panic(fmt.Sprintf("bed: no spare address %d (0..%d)", n, 254-spareBase))
	}
	return fmt.Sprintf("%s%d.%d", subnetPrefix, b.subnet, spareBase+n)
}

// AddAddress gives the machine a second address on its bed interface, as a machine with an
// interface in another space has: reachable from the host and every machine of the bed. ip must
// be in the bed's subnet (SpareIP gives free ones). Like the first address it is set from outside
// (the host's ip in the container's network namespace), so the image needs no iproute2.
func (m *Machine) AddAddress(ctx context.Context, ip string) error {
	_, subnet, err := net.ParseCIDR(m.bed.Subnet())
	if err != nil {
		return err
	}
	if a := net.ParseIP(ip); a == nil || !subnet.Contains(a) || ip == m.IP {
		return fmt.Errorf("adding address %q to %s: want a free address in %s", ip, m.Name, subnet)
	}
	if err := runIP(ctx, &m.pid, fmt.Sprintf("addr add %s/24 dev host0\n", ip)); err != nil {
		return fmt.Errorf("adding address %s to %s: %w", ip, m.Name, err)
	}
	return nil
}

// TCPConn is one established TCP connection of a machine, as ip:port pairs.
type TCPConn struct{ Local, Remote string }

// EstablishedTo lists the machine's established TCP connections whose local port is port (the
// connections its server on that port accepted), read from the kernel's tables of the machine's
// network namespace (/proc/<pid>/net/tcp and tcp6: a Go server on ":port" is a dual-stack IPv6
// socket, its IPv4 clients listed as v4-mapped addresses). No tool is needed inside the machine.
func (m *Machine) EstablishedTo(port int) ([]TCPConn, error) {
	var out []TCPConn
	for _, table := range []string{"tcp", "tcp6"} {
		conns, err := m.established(table, port)
		if err != nil {
			return nil, err
		}
		out = append(out, conns...)
	}
	return out, nil
}

func (m *Machine) established(table string, port int) ([]TCPConn, error) {
	path := fmt.Sprintf("/proc/%d/net/%s", m.pid, table)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s's connections: %w", m.Name, err)
	}
	defer f.Close()
	var out []TCPConn
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		// "sl local_address rem_address st ...", addresses as hex "0100007F:08AE" (each 32-bit
		// word of the address as a native integer, the port big-endian), st 01 = ESTABLISHED.
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[3] != "01" {
			continue
		}
		local, lport, err1 := procAddr(fields[1])
		remote, rport, err2 := procAddr(fields[2])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("parsing %s line %q", path, sc.Text())
		}
		if lport == port {
			out = append(out, TCPConn{Local: net.JoinHostPort(local, strconv.Itoa(lport)), Remote: net.JoinHostPort(remote, strconv.Itoa(rport))})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return out, nil
}

func procAddr(s string) (string, int, error) {
	h, p, ok := strings.Cut(s, ":")
	if !ok || (len(h) != 8 && len(h) != 32) {
		return "", 0, fmt.Errorf("bad address %q", s)
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return "", 0, err
	}
	// Each word is printed as a native integer: byte-swapped on the little-endian machines the
	// bed runs on. net.IP prints a v4-mapped IPv6 address in dotted form.
	ip := make(net.IP, len(b))
	for i := 0; i < len(b); i += 4 {
		binary.BigEndian.PutUint32(ip[i:], binary.LittleEndian.Uint32(b[i:]))
	}
	return ip.String(), int(port), nil
}

// BindAddress binds the unit's endpoint (or extra-binding) to ip: network-get answers it for
// that binding while unit-get keeps the private address (jujutest's SetBindingAddress), and the
// unit runs config-changed, as Juju runs it when a unit's addresses change.
func (c *Controller) BindAddress(unit, binding, ip string) {
	c.Model.SetBindingAddress(unit, binding, ip)
	c.enqueue(hook(unit, "config-changed"))
}

// RelationIngress makes ip the unit's ingress address on relation id (network-get -r), as Juju
// gives a cross-model relation the unit's public address, and runs config-changed on the unit.
func (c *Controller) RelationIngress(unit string, id int, ip string) {
	c.Model.SetRelationIngress(unit, id, ip)
	c.enqueue(hook(unit, "config-changed"))
}
