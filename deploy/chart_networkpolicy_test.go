package deploy

import (
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Peers and ports of the literal NetworkPolicies below.
func nsPeer(ns string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{
		MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}}}
}

func cidrPeer(cidr string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr}}
}

func tcp(port int) networkingv1.NetworkPolicyPort {
	p, proto := intstr.FromInt32(int32(port)), corev1.ProtocolTCP
	return networkingv1.NetworkPolicyPort{Port: &p, Protocol: &proto}
}

// dnsRule is the DNS egress rule towards peers.
func dnsRule(to ...networkingv1.NetworkPolicyPeer) networkingv1.NetworkPolicyEgressRule {
	port, udp, tcp := intstr.FromInt32(53), corev1.ProtocolUDP, corev1.ProtocolTCP
	return networkingv1.NetworkPolicyEgressRule{
		To:    to,
		Ports: []networkingv1.NetworkPolicyPort{{Port: &port, Protocol: &udp}, {Port: &port, Protocol: &tcp}},
	}
}

// kubeDNS is the only DNS egress rule by default: the cluster DNS pods,
// never an address block.
var kubeDNS = dnsRule(networkingv1.NetworkPolicyPeer{
	NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "kube-system"}},
	PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-dns"}},
})

// metricsFromMonitoring is the only ingress rule by default: the metrics
// port, from the monitoring namespace.
var metricsFromMonitoring = func() []networkingv1.NetworkPolicyIngressRule {
	port, proto := intstr.FromString("metrics"), corev1.ProtocolTCP
	return []networkingv1.NetworkPolicyIngressRule{{
		Ports: []networkingv1.NetworkPolicyPort{{Port: &port, Protocol: &proto}},
		From:  []networkingv1.NetworkPolicyPeer{nsPeer("monitoring")},
	}}
}()

// TestChartNetworkPolicyPeers checks each component's NetworkPolicy peer by
// peer, for values given literally: the publisher reaches the cluster DNS,
// this site's NATS and the primary etcd; the applier DNS, NATS and the
// standby etcd; the auditor DNS, NATS and both etcds (the primary across
// sites). An etcd given by IP addresses is reached at those addresses only;
// one given by host name at the peers networkPolicy names. The metrics
// port is open to the monitoring namespace only.
func TestChartNetworkPolicyPeers(t *testing.T) {
	egress := func(to []networkingv1.NetworkPolicyPeer, ports ...networkingv1.NetworkPolicyPort) networkingv1.NetworkPolicyEgressRule {
		return networkingv1.NetworkPolicyEgressRule{To: to, Ports: ports}
	}
	peers := func(p ...networkingv1.NetworkPolicyPeer) []networkingv1.NetworkPolicyPeer { return p }
	for _, tc := range []struct {
		name   string
		values map[string]any
		want   map[string][]networkingv1.NetworkPolicyEgressRule
	}{
		{
			name: "primary",
			values: map[string]any{"role": "primary", "logKey": logKeyValues,
				"primaryEtcd": map[string]any{"endpoints": []any{"https://10.0.0.10:2379", "https://10.0.0.11:2379"}}},
			want: map[string][]networkingv1.NetworkPolicyEgressRule{
				"etcdsync-publisher": {kubeDNS, egress(peers(nsPeer("nats")), tcp(4222)),
					egress(peers(cidrPeer("10.0.0.10/32"), cidrPeer("10.0.0.11/32")), tcp(2379))},
			},
		},
		{
			name: "standby",
			values: map[string]any{"role": "standby", "logKey": logKeyValues,
				"primaryEtcd":   map[string]any{"endpoints": []any{"https://etcd-lb.primary.example:12379"}},
				"standbyEtcd":   map[string]any{"endpoints": []any{"https://10.1.0.10:2379", "https://[fd00::11]:2379"}},
				"nats":          map[string]any{"namespace": "nats-standby"},
				"networkPolicy": map[string]any{"primaryEtcdTo": []any{map[string]any{"ipBlock": map[string]any{"cidr": "192.0.2.0/24"}}}}},
			want: map[string][]networkingv1.NetworkPolicyEgressRule{
				"etcdsync-applier": {kubeDNS, egress(peers(nsPeer("nats-standby")), tcp(4222)),
					egress(peers(cidrPeer("10.1.0.10/32"), cidrPeer("fd00::11/128")), tcp(2379))},
				"etcdsync-auditor": {kubeDNS, egress(peers(nsPeer("nats-standby")), tcp(4222)),
					egress(peers(cidrPeer("192.0.2.0/24")), tcp(12379)),
					egress(peers(cidrPeer("10.1.0.10/32"), cidrPeer("fd00::11/128")), tcp(2379))},
			},
		},
		{
			// The cluster DNS named by peers (a CoreDNS labelled otherwise,
			// a node-local DNS cache at a link-local address).
			name: "DNS peers named",
			values: map[string]any{"role": "primary", "logKey": logKeyValues,
				"primaryEtcd": map[string]any{"endpoints": []any{"https://10.0.0.10:2379"}},
				"networkPolicy": map[string]any{"dns": map[string]any{"to": []any{
					map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": "kube-system"}},
						"podSelector": map[string]any{"matchLabels": map[string]any{"app.kubernetes.io/name": "coredns"}}},
					map[string]any{"ipBlock": map[string]any{"cidr": "169.254.20.10/32"}},
				}}}},
			want: map[string][]networkingv1.NetworkPolicyEgressRule{
				"etcdsync-publisher": {dnsRule(networkingv1.NetworkPolicyPeer{
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "kube-system"}},
					PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": "coredns"}},
				}, cidrPeer("169.254.20.10/32")), egress(peers(nsPeer("nats")), tcp(4222)),
					egress(peers(cidrPeer("10.0.0.10/32")), tcp(2379))},
			},
		},
		{
			name: "NATS outside the cluster at an address",
			values: map[string]any{"role": "standby", "logKey": logKeyValues,
				"primaryEtcd": map[string]any{"endpoints": []any{"https://192.0.2.10:2379"}},
				"standbyEtcd": map[string]any{"endpoints": []any{"https://10.1.0.10:2379"}},
				"nats":        map[string]any{"namespace": "", "url": "tls://198.51.100.7:4443"},
				"auditor":     map[string]any{"enabled": false}},
			want: map[string][]networkingv1.NetworkPolicyEgressRule{
				"etcdsync-applier": {kubeDNS, egress(peers(cidrPeer("198.51.100.7/32")), tcp(4443)),
					egress(peers(cidrPeer("10.1.0.10/32")), tcp(2379))},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := renderDecoded(t, tc.values)
			if len(r.networkPolicies) != len(tc.want) {
				t.Errorf("NetworkPolicies %v, want %v", keys(r.networkPolicies), keys(tc.want))
			}
			for name, want := range tc.want {
				np := r.networkPolicies[name]
				if np == nil {
					t.Errorf("no NetworkPolicy %s", name)
					continue
				}
				if got, want := jsonOf(t, np.Spec.Ingress), jsonOf(t, metricsFromMonitoring); got != want {
					t.Errorf("%s ingress\n have %s\n want %s", name, got, want)
				}
				if got, want := jsonOf(t, np.Spec.Egress), jsonOf(t, want); got != want {
					t.Errorf("%s egress\n have %s\n want %s", name, got, want)
				}
				for _, e := range np.Spec.Egress {
					for _, p := range e.To {
						if p.IPBlock != nil && (p.IPBlock.CIDR == "0.0.0.0/0" || p.IPBlock.CIDR == "::/0") {
							t.Errorf("%s: egress to %s: an address block of everything", name, p.IPBlock.CIDR)
						}
					}
				}
			}
		})
	}
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
