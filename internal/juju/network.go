package juju

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
)

// Network is network-get's answer for one binding (contract §2.2).
type Network struct {
	BindAddresses    []BindAddress `json:"bind-addresses"`
	EgressSubnets    []string      `json:"egress-subnets"`
	IngressAddresses []string      `json:"ingress-addresses"`
}

// BindAddress is one interface the binding is bound to.
type BindAddress struct {
	MACAddress    string    `json:"mac-address"`
	InterfaceName string    `json:"interface-name"`
	Addresses     []Address `json:"addresses"`
}

// Address is one address on an interface.
type Address struct {
	Hostname string `json:"hostname"`
	Value    string `json:"value"`
	CIDR     string `json:"cidr"`
}

// UnmarshalJSON accepts old agents' "address" key in place of "value".
func (a *Address) UnmarshalJSON(b []byte) error {
	var raw struct {
		Hostname string `json:"hostname"`
		Value    string `json:"value"`
		Address  string `json:"address"`
		CIDR     string `json:"cidr"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*a = Address{Hostname: raw.Hostname, Value: raw.Value, CIDR: raw.CIDR}
	if a.Value == "" {
		a.Value = raw.Address
	}
	return nil
}

// PrivateAddress returns this unit's private address (unit-get private-address).
func (c *Client) PrivateAddress(ctx context.Context) (string, error) {
	var addr string
	if err := c.runJSON(ctx, toolUnitGet, []string{formatJSON, "private-address"}, &addr); err != nil {
		return "", fmt.Errorf("reading the unit's private address: %w", err)
	}
	return addr, nil
}

// NetworkGet returns the network configuration of binding (an endpoint or extra-binding name).
func (c *Client) NetworkGet(ctx context.Context, binding string) (Network, error) {
	var n Network
	if err := c.runJSON(ctx, toolNetworkGet, []string{formatJSON, binding}, &n); err != nil {
		return Network{}, fmt.Errorf("reading network config of binding %q: %w", binding, err)
	}
	return n, nil
}

// NetworkGetRelation returns the network configuration this unit should use on relation id
// (network-get -r): Juju answers for the relation's own endpoint binding, and for a cross-model
// relation its ingress address is the one the remote model can reach (the unit's public
// address), not the binding's space address.
func (c *Client) NetworkGetRelation(ctx context.Context, binding string, id int) (Network, error) {
	var n Network
	if err := c.runJSON(ctx, toolNetworkGet, []string{formatJSON, "-r", strconv.Itoa(id), binding}, &n); err != nil {
		return Network{}, fmt.Errorf("reading network config of binding %q on relation %d: %w", binding, id, err)
	}
	return n, nil
}

// Ingress is the address other units should dial to reach this one over the binding: the first
// ingress address (Juju sorts them, best first), else the first bound address, else "".
func (n Network) Ingress() string {
	for _, a := range n.IngressAddresses {
		if a != "" {
			return a
		}
	}
	for _, b := range n.BindAddresses {
		for _, a := range b.Addresses {
			if a.Value != "" {
				return a.Value
			}
		}
	}
	return ""
}
