//! fleet unit files: parsing systemd unit files with `[X-Fleet]` options and mapping them to
//! Shoal services.
//!
//! [`UnitFile::parse`] reads the file (sections, repeated keys in order, `\` continuations,
//! `#`/`;` comments; every syntax error names its line). [`to_service`] maps a parsed unit,
//! given its name (`web@1.service`), to a [`ServiceSpec`](shoal_types::ServiceSpec) plus the
//! unit's fleet placement ([`FleetPlacement`]) and warnings. The rule throughout: **nothing is
//! dropped silently**. A setting is honoured, or reported in [`Mapped::warnings`] (naming the
//! directive and its line), or the unit is refused ([`FleetError::Refused`], every refusal with
//! its line) when ignoring the setting would run something materially different.
//!
//! # Unit names and service names
//!
//! Only `.service` units map (`.timer` → use `shoal job create --schedule`; `.socket`,
//! `.mount`… are refused). A template (`web@.service`) is refused: fleet runs its instances
//! (`web@1.service`). The service name ([`service_name`]) is the unit name without `.service`,
//! with `@` and every character a service name cannot hold (`.`, `:`, escapes `\xNN` decoded
//! first) written `-`, trimmed of leading and trailing `-`/`_`, at most 63 characters:
//! `web@1.service` → `web-1`, `api.v2.service` → `api-v2`. The exact unit name is kept in the
//! label `fleet.unit` ([`LABEL_UNIT`]), which is how to go back (and how `Conflicts=` globs,
//! which name units, are to be matched).
//!
//! Specifiers: `[X-Fleet]` values expand fleet's `%n` (full name), `%N` (name without the
//! suffix, as fleet's code does), `%p` (prefix), `%i` (instance) and `%%`, leaving others as
//! written (as fleet does). The `[Service]` values systemd expands (`ExecStart=`,
//! `Environment=`, `User=`…) also take `%P`/`%I` (unescaped); a node-dependent specifier there
//! (`%H`, `%m`…) is refused.
//!
//! # Mapping
//!
//! | unit | Shoal |
//! |---|---|
//! | `ExecStart=docker run …` (or `/usr/bin/docker run`, `docker container run`) | the docker driver: image, `--entrypoint` → `command`, the words after the image → `args`, `-e`, `-v` (binds; named volumes), `-p` → `endpoint.ports` (host mode), `-w`, `-u`, `--hostname`, `--read-only`, `--cap-add/--cap-drop`, `--init`, `-t`, `-l`, `--dns*`, `--ulimit`, `--group-add`, `-m`, `--cpus`, `--pids-limit`, `--log-driver json-file/local` with `--log-opt`, `--stop-timeout`, `--restart` (the more restarting of it and `Restart=` wins). `--rm`, `-d`, `-i`, `--sig-proxy`, `--name` need nothing (Shoal names, attaches and removes its containers). `--net=host` → the **oci** driver, whose tasks share the node's network (Shoal's docker driver gives a container a network of its own); its `-p` are ignored as docker ignores them. `-e NAME` takes the value from the unit's `Environment=`, else is refused; `--env-file` is refused; any other docker option is refused, all listed |
//! | any other `ExecStart=` | the process driver, `command` = the words; `$VAR`/`${VAR}` expanded from `Environment=` (an unset one is refused: `EnvironmentFile=` and the node cannot be read when importing); a `docker` command other than `run` gets a warning |
//! | several `ExecStart=` (also with `Type=oneshot`) | refused: a task runs one command |
//! | `ExecStart` prefixes | `-` (exit status ignored), `@` (argv[0]), `+`/`!` with `User=`: warnings; `:` honoured; `\|` refused |
//! | `ExecStartPre/Post`, `ExecStop/StopPost`, `ExecReload`, `ExecCondition` | a `docker run` unit's `docker kill/rm/stop NAME` of its own container and `docker pull` of its own image: dropped quietly (Shoal does them; `docker stop -t N` gives the stop grace period); every other command: a warning (Shoal has no hooks) |
//! | `Environment=` (repeated, quoted, `Environment=` empties) | process: `env`. docker run: the client's environment, used for `${VAR}` and `-e NAME`; any variable left unused gets a warning |
//! | `EnvironmentFile=` | process: refused; docker run: warning |
//! | `User=`, `Group=`, `SupplementaryGroups=`, `WorkingDirectory=` | process: `user` (`USER:GROUP`), `groups`, `workdir`. docker run: warnings (they apply to the docker client; use `-u`, `-w`…) |
//! | `LimitNOFILE=` and the other `Limit*`, `MemoryMax=`/`MemoryLimit=`, `CPUQuota=`, `TasksMax=` | process: `ulimits`, `resources.limits` (memory, nano-CPUs, pids); percentages of the node are refused. docker run: warnings (use `--ulimit`, `-m`…) |
//! | `Type=simple/exec/idle` | replicated, 1 replica (global with `Global=true`) |
//! | `Type=oneshot` | `replicated_job {max_concurrent: 1, total_completions: 1}` (`global_job` with `Global=true`) |
//! | `Type=notify/dbus` | as simple, with a warning; `Type=forking`: refused, but a warning for docker run |
//! | `Restart=` | `no` → none (also when absent: systemd's default), `always` → any, `on-failure` → on_failure, `on-abnormal/on-abort` → on_failure with a warning, `on-watchdog` → none with a warning, `on-success` refused |
//! | `RestartSec=` (`5`, `5s`, `1min 30s`) | `restart_policy.delay` (Shoal's 5 s when absent) |
//! | `StartLimitBurst=`, `StartLimitIntervalSec=` | `restart_policy.max_attempts`, `window` (systemd's 5 / 10 s for the half not given; 0 s: no limit) |
//! | `TimeoutStopSec=` (`TimeoutSec=` with a warning) | `stop_grace_period` (Shoal's 10 s when absent); `infinity`/`0` refused |
//! | `[Unit] Description=` | label `fleet.description` |
//! | `[Unit] After/Before/Requires/Wants/BindsTo/PartOf/Requisite=` | warnings listing the units (`network*.target` and, for containers, `docker.service/socket` go unsaid) |
//! | `[Install]` | ignored (fleet ignores it) |
//! | `[X-Fleet] MachineID=` | `placement.machine_id`, constraint `node.id==ID` (with a warning: fleet's IDs are `/etc/machine-id`) |
//! | `MachineMetadata=` (`k=v` words, quoted or not, repeated) | constraints, AND across keys: `node.labels.KEY==VALUE`, or `node.labels.KEY in (V1,V2)` for a key given several values (OR) |
//! | `Conflicts=` (globs, repeated) | `placement.conflicts`: never on a node with a task of a service whose name or `fleet.unit` label matches (either side's rule; the unit's own instances included) |
//! | `MachineOf=` | `placement.colocate`: only next to that unit's task, and moved when it moves |
//! | `Global=` | `placement.global`, global mode; with `MachineID`/`MachineOf` refused (fleet's rules, also MachineID with MachineOf/Conflicts) |
//! | `Replaces=`, `X-ConditionMachineBootID=`, unknown `[X-Fleet]` keys | refused |
//! | `X-ConditionMachineID/-MachineOf/-MachineMetadata`, `X-Conflicts` | aliases |
//! | any other directive | warning `unsupported directive Section.Key (line N) ignored` |
//!
//! [`FleetPlacement`] keeps the `[X-Fleet]` section as written, for display. Defaults are Shoal's where the unit says nothing (restart delay
//! 5 s, stop grace period 10 s), except `Restart=`, whose absence means no restarts as in systemd.

pub mod error;
pub mod exec;
pub mod map;
pub mod unit;

pub use error::FleetError;
pub use exec::{parse_exec, split_words, DockerHousekeeping, DockerRun, ExecCommand, ExecPrefix};
pub use map::{
    parse_timespan, service_name, to_service, FleetPlacement, Mapped, LABEL_DESCRIPTION, LABEL_UNIT,
};
pub use unit::{Entry, Section, UnitFile, UnitName};
