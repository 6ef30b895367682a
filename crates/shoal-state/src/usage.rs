//! Per-node usage, kept incrementally as tasks change so the scheduler never rescans all tasks.

use shoal_types::{Protocol, Resources, ServiceId, Task};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeUsage {
    /// Sum of the reservations of the tasks holding resources here.
    pub reserved: Resources,
    /// Tasks holding resources here.
    pub tasks: u64,
    pub by_service: BTreeMap<ServiceId, u64>,
    /// Host ports bound by those tasks (count per port, to survive transient duplicates).
    pub host_ports: BTreeMap<(Protocol, u16), u32>,
}

impl NodeUsage {
    pub(crate) fn add(&mut self, t: &Task) {
        self.reserved.add(&t.spec.resources.reservations);
        self.tasks += 1;
        *self.by_service.entry(t.service_id.clone()).or_insert(0) += 1;
        for p in t.endpoint.host_ports() {
            *self.host_ports.entry(p).or_insert(0) += 1;
        }
    }

    pub(crate) fn remove(&mut self, t: &Task) {
        self.reserved.sub(&t.spec.resources.reservations);
        self.tasks = self.tasks.saturating_sub(1);
        if let Some(c) = self.by_service.get_mut(&t.service_id) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.by_service.remove(&t.service_id);
            }
        }
        for p in t.endpoint.host_ports() {
            if let Some(c) = self.host_ports.get_mut(&p) {
                *c = c.saturating_sub(1);
                if *c == 0 {
                    self.host_ports.remove(&p);
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tasks == 0 && self.by_service.is_empty() && self.host_ports.is_empty() && self.reserved.is_zero()
    }

    pub fn of_service(&self, id: &ServiceId) -> u64 {
        self.by_service.get(id).copied().unwrap_or(0)
    }
}
