//! Names of what Shoal creates. Network namespaces live in one directory (`/run/netns`) for the
//! whole machine, so theirs carry the node (several simulated nodes share a machine in tests);
//! interface names are at most 15 bytes and unique only within their namespace.

/// Node-side end of a network's load-balancer veth (`shl<vni>`), in the node's namespace.
pub const LB_HOST_PREFIX: &str = "shl";
/// Its peer, a port of the network's bridge inside the sandbox.
pub const LB_SANDBOX: &str = "lb0";
pub const BRIDGE: &str = "br0";
pub const NETNS_DIR: &str = "/run/netns";

pub fn lb_host(vni: u32) -> String {
    format!("{LB_HOST_PREFIX}{vni}")
}

pub fn vxlan(vni: u32) -> String {
    format!("vx{vni}")
}

/// A task's interface on its `k`-th network, inside the task's namespace.
pub fn task_if(k: usize) -> String {
    format!("eth{k}")
}

/// The bridge-side end of a task's veth, inside the network's sandbox.
pub fn task_veth(task_id: &str) -> String {
    let short: String = task_id.chars().take(12).collect();
    format!("t{short}")
}

/// The names of one node's namespaces.
#[derive(Clone, Debug)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(node_id: &str) -> Names {
        let short: String = node_id.chars().take(8).collect();
        Names { prefix: format!("shoal-{short}") }
    }

    /// A network's sandbox: its bridge, VXLAN device and the veths of the tasks on this node.
    pub fn sandbox(&self, vni: u32) -> String {
        format!("{}-n{vni}", self.prefix)
    }

    pub fn task(&self, task_id: &str) -> String {
        format!("{}-t-{task_id}", self.prefix)
    }

    /// The VNI of one of this node's sandbox names.
    pub fn sandbox_vni(&self, ns: &str) -> Option<u32> {
        ns.strip_prefix(&self.prefix)?.strip_prefix("-n")?.parse().ok()
    }

    /// The task id of one of this node's task namespace names.
    pub fn task_of<'a>(&self, ns: &'a str) -> Option<&'a str> {
        ns.strip_prefix(&self.prefix)?.strip_prefix("-t-")
    }
}

/// `02:42:` and the address's four bytes, as Docker does: the state needs no MACs.
pub fn mac(addr: std::net::Ipv4Addr) -> String {
    let o = addr.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_round_trip() {
        let n = Names::new("abcdefghijklmnopqrstuvwxy");
        assert_eq!(n.sandbox(4097), "shoal-abcdefgh-n4097");
        assert_eq!(n.sandbox_vni(&n.sandbox(16_777_215)), Some(16_777_215));
        assert_eq!(n.task_of(&n.task("t123")), Some("t123"));
        assert_eq!(Names::new("other").task_of(&n.task("t123")), None);
        assert!(lb_host(16_777_215).len() <= 15 && vxlan(16_777_215).len() <= 15);
        assert!(task_veth("abcdefghijklmnopqrstuvwxy").len() <= 15);
        assert_eq!(mac("10.0.1.5".parse().expect("ip")), "02:42:0a:00:01:05");
    }
}
