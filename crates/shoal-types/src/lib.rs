//! Shoal's object model. Every object is `Meta + Spec + Status`: `id, version, created_at,
//! updated_at` (meta, owned by the store), `spec` (desired, owned by the user) and `status`
//! (observed, owned by the system). No I/O, no clocks: pure data plus validation.

pub mod constraint;
pub mod container;
pub mod id;
pub mod job;
pub mod network;
pub mod node;
pub mod resources;
pub mod schedule;
pub mod schema;
pub mod secret;
pub mod service;
pub mod shell;
pub mod stack;
pub mod task;
pub mod time;
pub mod validate;

pub use constraint::{Constraint, ConstraintError, ConstraintKey, Operator};
pub use container::{DnsConfig, LogDriver, Ulimit};
pub use id::{NetworkId, NodeId, SecretId, ServiceId, TaskId};
pub use job::{ConcurrencyPolicy, JobRun, JobStatus, RunCause, RunOutcome, RunState, ScheduledJob, Trigger};
pub use network::{
    Ipv4Net, Network, NetworkAttachmentConfig, NetworkDriver, NetworkSpec, NetworkStatus, ServiceEndpoint,
    TaskNetwork, VirtualIp,
};
pub use node::{
    Availability, DriverInfo, ManagerStatus, Node, NodeDescription, NodeRole, NodeSpec, NodeState,
    NodeStatus, Platform, Reachability,
};
pub use resources::{parse_cpus, Resources, Shortfall, NANO_CPUS_PER_CPU};
pub use schedule::{validate_time_zone, CronSchedule, RepeatingInterval, Schedule, ScheduleError};
pub use secret::{Secret, SecretData, SecretKind, SecretReference, SecretSpec, SecretString};
pub use service::{
    glob_match, Dependency, DependencyCondition, EndpointMode, EndpointSpec, FailureAction, HealthCheck,
    Mount, MountType, OnDrain, Placement, PlacementPreference, PortConfig, Protocol, PublishMode,
    RebalanceMode, ResourceRequirements, RestartCondition, RestartPolicy, SealedAuth, Service, ServiceMode,
    ServiceSpec, Strategy, TaskTemplate, UpdateConfig, UpdateOrder, UpdateState, UpdateStatus,
    DEFAULT_STOP_GRACE_PERIOD, FLEET_UNIT_LABEL,
};
pub use stack::StackSpec;
pub use task::{Health, RestoreSpec, Task, TaskState, TaskStatus, ALL_TASK_STATES};
pub use time::Timestamp;
pub use validate::{FieldError, ValidationError};
