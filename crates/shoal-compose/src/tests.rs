use super::*;
use shoal_types::{
    DependencyCondition, EndpointMode, FailureAction, MountType, Protocol, PublishMode, RestartCondition,
    ServiceMode, ServiceSpec, UpdateOrder,
};
use std::time::Duration;

fn env_of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Files the tests' `env_file`s read.
fn files(path: &Path) -> std::io::Result<String> {
    match path.to_str() {
        Some("/proj/common.env") => {
            Ok("# shared\nFROM_FILE=1\nOVERRIDDEN=file\nexport QUOTED=\"a b\"\n".into())
        }
        Some("/proj/extra.env") => Ok("EXTRA='x#y' \nPLAIN=v # comment\n".into()),
        _ => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")),
    }
}

/// Secret and config files the tests read.
fn bytes(path: &Path) -> std::io::Result<Vec<u8>> {
    match path.to_str() {
        Some("/proj/secrets/db.pw") => Ok(b"hunter2\n".to_vec()),
        Some("/proj/app.conf") => Ok(b"listen 80\n".to_vec()),
        Some("/proj/empty") => Ok(Vec::new()),
        _ => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")),
    }
}

fn load_with(docs: &[&str], env: &[(&str, &str)]) -> Result<Project, Error> {
    let env = env_of(env);
    let opts = Options { env: &env, base_dir: Path::new("/proj"), read_file: &files, read_bytes: &bytes };
    let files: Vec<ComposeFile> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| ComposeFile { name: format!("f{i}.yml"), content: d.to_string() })
        .collect();
    load(&files, &opts)
}

fn ok(doc: &str) -> Project {
    load_with(&[doc], &[]).unwrap_or_else(|e| panic!("loads:\n{e}"))
}

fn errors(doc: &str) -> Vec<String> {
    match load_with(&[doc], &[]) {
        Ok(p) => panic!("expected errors, got {:?}", p.stack),
        Err(e) => e.0,
    }
}

fn svc<'a>(p: &'a Project, name: &str) -> &'a ServiceSpec {
    p.stack.services.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("service {name}"))
}

#[test]
fn a_swarm_stack_file_reads_field_by_field() {
    let p = ok(r#"
version: "3.9"
services:
  web:
    image: registry.example/web:1.2
    x-shoal-driver: docker
    command: ["serve", "--port", "8080"]
    entrypoint: /docker-entrypoint.sh
    environment:
      MODE: production
      WORKERS: 4
      DEBUG: false
    ports:
      - "80:8080"
      - "53:53/udp"
      - "9000-9001:9000-9001"
      - target: 443
        published: 8443
        protocol: tcp
        mode: ingress
    networks:
      front:
        aliases: [www]
      back: {}
    volumes:
      - data:/var/lib/web:ro
      - ./conf:/etc/web
      - type: bind
        source: /srv/static
        target: /static
        read_only: true
    hostname: web-host
    user: "1000"
    working_dir: /app
    stop_grace_period: 1m30s
    healthcheck:
      test: curl -f http://localhost:8080/
      interval: 5s
      timeout: 2s
      retries: 5
      start_period: 500ms
    deploy:
      mode: replicated
      replicas: 3
      endpoint_mode: vip
      labels: [tier=frontend, team=web]
      resources:
        limits: {cpus: "0.5", memory: 512M, pids: 100}
        reservations:
          cpus: 0.25
          memory: 128m
          generic_resources:
            - discrete_resource_spec: {kind: gpu, value: 1}
      placement:
        constraints: [node.labels.zone==a, "node.role==worker"]
        preferences: [{spread: node.labels.rack}]
        max_replicas_per_node: 2
      restart_policy: {condition: on-failure, delay: 3s, max_attempts: 4, window: 2m}
      update_config: {parallelism: 2, delay: 10s, failure_action: rollback, monitor: 30s, max_failure_ratio: 0.1, order: start-first}
      rollback_config: {parallelism: 0, order: stop-first, failure_action: continue}
  worker:
    image: registry.example/worker
    deploy: {mode: global}
    depends_on: [web]
networks:
  front:
  back:
    driver: overlay
    attachable: true
    driver_opts: {com.docker.network.driver.mtu: "1400"}
    ipam: {config: [{subnet: 10.20.0.0/24, gateway: 10.20.0.1}]}
    labels: {purpose: backend}
volumes:
  data:
"#);
    assert_eq!(p.warnings, ["`version` is obsolete and ignored"]);
    let web = svc(&p, "web");
    let t = &web.task_template;
    assert_eq!(t.image.as_deref(), Some("registry.example/web:1.2"));
    assert_eq!(t.driver.as_deref(), Some("docker"), "x-shoal-driver");
    assert_eq!(t.command, ["/docker-entrypoint.sh"], "entrypoint replaces the image's entrypoint");
    assert_eq!(t.args, ["serve", "--port", "8080"], "command replaces the image's cmd");
    assert_eq!(t.env, env_of(&[("MODE", "production"), ("WORKERS", "4"), ("DEBUG", "false")]));
    let ports: Vec<(u16, u16, Protocol, PublishMode)> =
        web.endpoint.ports.iter().map(|p| (p.published, p.target, p.protocol, p.mode)).collect();
    assert_eq!(
        ports,
        [
            (80, 8080, Protocol::Tcp, PublishMode::Ingress),
            (53, 53, Protocol::Udp, PublishMode::Ingress),
            (9000, 9000, Protocol::Tcp, PublishMode::Ingress),
            (9001, 9001, Protocol::Tcp, PublishMode::Ingress),
            (8443, 443, Protocol::Tcp, PublishMode::Ingress),
        ]
    );
    let nets: Vec<(&str, Vec<String>)> =
        web.networks.iter().map(|n| (n.target.as_str(), n.aliases.clone())).collect();
    assert_eq!(nets, [("front", vec!["www".to_string()]), ("back", vec![])]);
    let mounts: Vec<(MountType, &str, &str, bool)> =
        t.mounts.iter().map(|m| (m.kind, m.source.as_str(), m.target.as_str(), m.readonly)).collect();
    assert_eq!(
        mounts,
        [
            (MountType::Volume, "data", "/var/lib/web", true),
            (MountType::Bind, "/proj/conf", "/etc/web", false),
            (MountType::Bind, "/srv/static", "/static", true),
        ]
    );
    assert_eq!((t.hostname.as_str(), t.user.as_str(), t.workdir.as_str()), ("web-host", "1000", "/app"));
    assert_eq!(t.stop_grace_period, Duration::from_secs(90));
    let h = t.health_check.as_ref().expect("healthcheck");
    assert_eq!(h.test, ["CMD-SHELL", "curl -f http://localhost:8080/"]);
    assert_eq!((h.interval, h.timeout, h.retries), (Duration::from_secs(5), Duration::from_secs(2), 5));
    assert_eq!(h.start_period, Duration::from_millis(500));
    assert_eq!(web.mode, ServiceMode::Replicated { replicas: 3 });
    assert_eq!(web.endpoint.mode, EndpointMode::Vip);
    assert_eq!(web.labels, env_of(&[("tier", "frontend"), ("team", "web")]));
    let r = &t.resources;
    assert_eq!((r.limits.nano_cpus, r.limits.memory_bytes, r.limits.pids), (500_000_000, 512 << 20, 100));
    assert_eq!((r.reservations.nano_cpus, r.reservations.memory_bytes), (250_000_000, 128 << 20));
    assert_eq!(r.reservations.generic.get("gpu"), Some(&1));
    assert_eq!(t.placement.constraints, ["node.labels.zone==a", "node.role==worker"]);
    assert_eq!(t.placement.preferences[0].spread, "node.labels.rack");
    assert_eq!(t.placement.max_replicas_per_node, 2);
    let rp = &t.restart_policy;
    assert_eq!(rp.condition, RestartCondition::OnFailure);
    assert_eq!((rp.delay, rp.max_attempts, rp.window), (Duration::from_secs(3), 4, Duration::from_secs(120)));
    let u = &web.update_config;
    assert_eq!((u.parallelism, u.delay, u.monitor), (2, Duration::from_secs(10), Duration::from_secs(30)));
    assert_eq!(
        (u.failure_action, u.order, u.max_failure_ratio),
        (FailureAction::Rollback, UpdateOrder::StartFirst, 0.1)
    );
    let rb = &web.rollback_config;
    assert_eq!(rb.parallelism, shoal_types::validate::MAX_REPLICAS, "Swarm's 0 is all at once");
    assert_eq!(rb.failure_action, FailureAction::Continue);

    let worker = svc(&p, "worker");
    assert_eq!(worker.mode, ServiceMode::Global);
    assert_eq!(worker.networks[0].target, "default", "a service without networks joins the stack's default");
    assert_eq!(worker.depends_on[0].service, "web");
    assert_eq!(worker.depends_on[0].condition, DependencyCondition::Started);

    let names: Vec<&str> = p.stack.networks.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["front", "back", "default"]);
    let back = &p.stack.networks[1];
    assert!(back.attachable);
    assert_eq!(back.mtu, Some(1400));
    assert_eq!((back.subnet.as_deref(), back.gateway.as_deref()), (Some("10.20.0.0/24"), Some("10.20.0.1")));
    assert_eq!(back.labels.get("purpose").map(String::as_str), Some("backend"));
    assert_eq!(p.stack.volumes, ["data"]);
    // What the managers will check accepts it too (driver rules included).
    for s in &p.stack.services {
        s.validate().unwrap_or_else(|e| panic!("{}: {e}", s.name));
    }
}

#[test]
fn a_service_without_an_image_runs_its_command_on_the_process_driver() {
    let p = ok(r#"
services:
  db:
    x-shoal-driver: process
    entrypoint: [sh, -c]
    command: ["sleep 300"]
    healthcheck: {test: [CMD, "true"], interval: 1s}
  app:
    command: sh -c 'echo "hi there" && sleep 300'
    ports: [{target: 7000, published: 7000, mode: host}]
    depends_on:
      db: {condition: service_healthy}
  job:
    command: ["true"]
    deploy: {mode: replicated-job, replicas: 3}
"#);
    let db = svc(&p, "db");
    assert_eq!(db.task_template.driver.as_deref(), Some("process"));
    assert_eq!(db.task_template.command, ["sh", "-c", "sleep 300"], "entrypoint and command are one argv");
    assert!(db.task_template.args.is_empty());
    let app = svc(&p, "app");
    assert_eq!(app.task_template.driver, None);
    assert_eq!(app.task_template.image, None);
    assert_eq!(app.task_template.command, ["sh", "-c", "echo \"hi there\" && sleep 300"]);
    assert_eq!(app.depends_on[0].condition, DependencyCondition::Healthy);
    assert_eq!(app.endpoint.ports[0].mode, PublishMode::Host);
    assert_eq!(svc(&p, "job").mode, ServiceMode::ReplicatedJob { max_concurrent: 3, total_completions: 3 });
    for s in &p.stack.services {
        s.validate().unwrap_or_else(|e| panic!("{}: {e}", s.name));
    }
}

#[test]
fn variables_are_interpolated_with_defaults_and_required_ones_refused() {
    let doc = r#"
services:
  web:
    image: "web:${TAG:-latest}"
    ports: ["${PORT}:80"]
    environment: [HOME, NOT_SET, "LITERAL=$${HOME}"]
    deploy:
      replicas: ${REPLICAS:-2}
      resources: {limits: {memory: "${MEM}"}}
"#;
    let p = load_with(&[doc], &[("TAG", "1.5"), ("PORT", "8080"), ("HOME", "/root"), ("MEM", "1g")])
        .expect("loads");
    let web = svc(&p, "web");
    assert_eq!(web.task_template.image.as_deref(), Some("web:1.5"));
    assert_eq!(web.endpoint.ports[0].published, 8080);
    assert_eq!(web.mode, ServiceMode::Replicated { replicas: 2 }, "an interpolated number reads as one");
    assert_eq!(web.task_template.resources.limits.memory_bytes, 1 << 30);
    // A variable named without a value comes from the environment; one not there is left out.
    assert_eq!(web.task_template.env, env_of(&[("HOME", "/root"), ("LITERAL", "${HOME}")]));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);

    // Unset: the default, or an empty string with a warning (which the reader may then refuse).
    let e = load_with(&[doc], &[("PORT", "80")]).expect_err("no memory");
    assert_eq!(e.0, ["services.web.deploy.resources.limits.memory: invalid size \"\" (use bytes or a number with b, k, m or g, e.g. 512m, 1.5g)"]);
    let p = load_with(&["services: {web: {image: \"web:${TAG:-latest}\", hostname: \"$NAME\"}}"], &[])
        .expect("loads");
    assert_eq!(svc(&p, "web").task_template.image.as_deref(), Some("web:latest"));
    assert_eq!(p.warnings, ["the NAME variable is not set: substituting an empty string"]);

    let e = load_with(&["services: {web: {image: \"${IMAGE:?set IMAGE to the image to run}\"}}"], &[])
        .expect_err("required");
    assert_eq!(e.0, ["f0.yml: services.web.image: required variable IMAGE is missing a value: set IMAGE to the image to run"]);
}

#[test]
fn env_file_then_environment_with_the_later_one_winning() {
    let p = ok(r#"
services:
  web:
    image: web
    env_file: [common.env, {path: extra.env, required: true}, {path: missing.env, required: false}]
    environment: {OVERRIDDEN: compose}
"#);
    let env = &svc(&p, "web").task_template.env;
    assert_eq!(
        env,
        &env_of(&[
            ("FROM_FILE", "1"),
            ("OVERRIDDEN", "compose"),
            ("QUOTED", "a b"),
            ("EXTRA", "x#y"),
            ("PLAIN", "v")
        ])
    );
    let e = errors("services: {web: {image: web, env_file: missing.env}}");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("services.web.env_file[0]: cannot read /proj/missing.env"), "{e:?}");
}

#[test]
fn keys_shoal_cannot_honour_are_refused_by_name_and_typos_are_unknown() {
    let e = errors(
        r#"
services:
  web:
    build: .
    image: web
    imagee: web
    sysctls: {net.core.somaxconn: 1024}
    restart: always
    logging: {driver: syslog}
    x-anything: ignored
    x-shoal-drivr: process
    deploy:
      replicas: 2
      resouces: {}
      resources: {reservations: {devices: [{capabilities: [gpu]}]}}
configs: {c: {file: ./app.conf, template_driver: golang}}
x-common: &common {a: 1}
"#,
    );
    let want = [
        "configs.c.template_driver: not supported by Shoal: templated secrets and configs",
        "services.web.deploy.resources.reservations.devices: not supported by Shoal: reserve generic resources (generic_resources) instead",
        "services.web.deploy.resouces: unknown key (did you mean resources?)",
        "services.web.build: not supported by Shoal: a build-only key: Shoal runs images and does not build them; build the image, load it on the nodes (or push it) and name it in image:",
        "services.web.imagee: unknown key (did you mean image?)",
        "services.web.sysctls: not supported by Shoal",
        "services.web.restart: not supported by Shoal: use deploy.restart_policy (Swarm ignores restart: as well)",
        "services.web.logging: log driver \"syslog\": not supported: Shoal keeps task logs itself; see shoal service logs",
        "services.web.x-shoal-drivr: unknown key (did you mean x-shoal-driver?)",
    ];
    for w in want {
        assert!(e.iter().any(|x| x == w), "missing {w:?} in\n{}", e.join("\n"));
    }
    assert_eq!(e.len(), want.len(), "{}", e.join("\n"));
}

#[test]
fn container_options_read_like_swarms() {
    let p = ok(r#"
services:
  web:
    image: web
    read_only: true
    init: true
    tty: true
    cap_add: [NET_ADMIN]
    cap_drop: [cap_net_raw]
    dns: 1.1.1.1
    dns_search: [example.org]
    dns_opt: [ndots:2]
    labels: [team=fish]
    ulimits: {nproc: 64, nofile: {soft: 1024, hard: 2048}}
    group_add: [audio, "50"]
    logging: {driver: local, options: {max-size: 1m, max-file: "2"}}
    deploy: {labels: {tier: web}}
"#);
    let web = svc(&p, "web");
    let t = &web.task_template;
    assert!(t.read_only && t.init && t.tty);
    assert_eq!(t.cap_add, ["CAP_NET_ADMIN"]);
    assert_eq!(t.cap_drop, ["CAP_NET_RAW"]);
    assert_eq!(t.dns.nameservers, ["1.1.1.1"]);
    assert_eq!(t.dns.search, ["example.org"]);
    assert_eq!(t.dns.options, ["ndots:2"]);
    assert_eq!(t.container_labels, env_of(&[("team", "fish")]));
    assert_eq!(web.labels, env_of(&[("tier", "web")]), "deploy.labels are the service's");
    let limits: Vec<(&str, i64, i64)> = t.ulimits.iter().map(|u| (u.name.as_str(), u.soft, u.hard)).collect();
    assert!(limits.contains(&("nproc", 64, 64)) && limits.contains(&("nofile", 1024, 2048)), "{limits:?}");
    assert_eq!(t.groups, ["audio", "50"]);
    let log = t.log_driver.as_ref().expect("logging");
    assert_eq!((log.name.as_str(), log.max_size(), log.max_file()), ("local", Some(1 << 20), Some(2)));
    // A stack's services join its default network, where the resolver is Shoal's: it forwards
    // the names the cluster does not own to the service's servers, as Swarm's does.
    assert!(!web.networks.is_empty(), "on the stack's default network");
    web.validate().expect("dns servers on a network");
    let e = errors("services: {web: {image: web, ulimits: {nofile: {soft: 2, hard: 1}}, cap_add: [FLY]}}");
    assert!(
        e.iter().any(|x| x.contains("services.web.ulimits.nofile") && x.contains("above the hard")),
        "{e:?}"
    );
    assert!(
        e.iter().any(|x| x.contains("services.web.cap_add[0]") && x.contains("unknown capability")),
        "{e:?}"
    );
}

#[test]
fn what_shoal_cannot_do_in_values_is_refused_too() {
    let cases: &[(&str, &str)] = &[
        ("services: {a: {image: x, ports: ['80']}}", "services.a.ports[0]: \"80\" publishes the port on a port of Swarm's choosing"),
        ("services: {a: {image: x, ports: ['127.0.0.1:80:80']}}", "a host address to publish on is not supported"),
        ("services: {a: {image: x, ports: ['80:80/sctp']}}", "protocol \"sctp\" is not supported"),
        ("services: {a: {image: x, ports: [{target: 80}]}}", "services.a.ports[0]: publishes the port on a port of Swarm's choosing"),
        ("services: {a: {image: x, ports: [{target: 80, published: 81, host_ip: 1.2.3.4}]}}", "services.a.ports[0].host_ip: not supported by Shoal"),
        ("services: {a: {image: x, volumes: ['/data']}}", "anonymous volumes are not supported"),
        ("services: {a: {image: x, volumes: ['data:/data']}}", "volume data is not declared in the top-level volumes"),
        ("services: {a: {image: x, volumes: ['./d:/data:z']}}", "volume option \"z\" is not supported"),
        ("services: {a: {image: x, volumes: [{type: tmpfs, target: /t}]}}", "services.a.volumes[0].type: only bind and volume mounts"),
        ("services: {a: {image: x, networks: [nope]}}", "services.a.networks.nope: network nope is not declared"),
        ("services: {a: {image: x, networks: {n: {ipv4_address: 10.0.0.5}}}}\nnetworks: {n: {}}", "services.a.networks.n.ipv4_address: not supported by Shoal: addresses are allocated by the managers"),
        ("services: {a: {image: x}}\nnetworks: {default: {driver: bridge}}", "networks.default.driver: \"bridge\": Shoal's networks are overlay networks"),
        ("services: {a: {image: x}}\nnetworks: {default: {name: custom}}", "networks.default.name: a stack's network is named STACK_KEY"),
        ("services: {a: {image: x}}\nvolumes: {v: {driver: nfs}}", "volumes.v.driver: only the local volume driver"),
        ("services: {a: {image: x, depends_on: {b: {condition: service_completed_successfully}}}, b: {image: x}}", "service_completed_successfully is not supported by Shoal"),
        ("services: {a: {image: x, depends_on: [nope]}}", "services.a.depends_on.nope: nope is not a service of this file"),
        ("services: {a: {image: x, depends_on: [a]}}", "services.a.depends_on.a: a service cannot depend on itself"),
        ("services: {a: {image: x, depends_on: {b: {condition: service_healthy}}}, b: {image: x}}", "condition service_healthy, but b has no healthcheck"),
        ("services: {a: {image: x, depends_on: [b]}, b: {image: x, depends_on: [a]}}", "depends_on: a dependency cycle: a → b → a"),
        ("services: {a: {image: x, deploy: {replicas: many}}}", "services.a.deploy.replicas: expected a whole number, got \"many\""),
        ("services: {a: {image: x, deploy: {mode: global, replicas: 2}}}", "replicas is only for the replicated modes"),
        ("services: {a: {image: x, deploy: {mode: daemon}}}", "\"daemon\" is not one of replicated, global, replicated-job, global-job"),
        ("services: {a: {image: x, stop_grace_period: 10}}", "expected a duration (e.g. 10s, 1m30s), got 10") ,
        ("services: {a: {image: x, deploy: {resources: {limits: {memory: lots}}}}}", "invalid size \"lots\""),
        ("services: {a: {image: x, healthcheck: {test: [curl, x]}}}", "a list starts with CMD, CMD-SHELL or NONE"),
        ("services: {a: {image: x, healthcheck: {test: [CMD, x], start_interval: 1s}}}", "start_interval: not supported by Shoal"),
        ("services: {a: {image: x, x-shoal-driver: firecracker}}", "\"firecracker\" is not one of process, oci, docker"),
        ("services: {a: {environment: {A: b}}}", "services.a: a service needs an image, or a command"),
        ("services: {}", "services: a stack needs at least one service"),
        ("networks: {}", "services: a stack needs at least one service"),
        ("services: {a: {image: x, entrypoint: []}}", "an empty entrypoint"),
        ("include: [other.yml]\nservices: {a: {image: x}}", "include: not supported by Shoal: name every file with -c instead"),
    ];
    for (doc, want) in cases {
        let e = errors(doc);
        assert!(e.iter().any(|x| x.contains(want)), "{doc}\nwanted {want:?} in\n{}", e.join("\n"));
    }
}

#[test]
fn yaml_tags_and_bad_yaml_are_refused_with_the_file() {
    let e = load_with(&["services: {a: {image: x, ports: !reset []}}"], &[]).expect_err("tag");
    assert_eq!(
        e.0,
        ["f0.yml: services.a.ports: YAML tags (!reset) are not supported: write the value itself"]
    );
    let e = load_with(&["services: [a"], &[]).expect_err("yaml");
    assert!(e.0[0].starts_with("f0.yml: "), "{e:?}");
    let e = load_with(&["- a\n- b"], &[]).expect_err("not a mapping");
    assert_eq!(e.0, ["f0.yml: a compose file is a mapping (services:, networks:, …)"]);
}

#[test]
fn anchors_and_merge_keys_work_and_extensions_are_ignored() {
    let p = ok(r#"
x-defaults: &defaults
  image: base:1
  environment: {A: "1"}
  deploy: {replicas: 2}
services:
  one:
    <<: *defaults
  two:
    <<: *defaults
    image: base:2
"#);
    assert_eq!(svc(&p, "one").task_template.image.as_deref(), Some("base:1"));
    assert_eq!(svc(&p, "two").task_template.image.as_deref(), Some("base:2"));
    assert_eq!(svc(&p, "two").mode, ServiceMode::Replicated { replicas: 2 });
}

#[test]
fn later_files_override_earlier_ones() {
    let base = r#"
services:
  web:
    image: web:1
    environment: [A=1]
    deploy: {replicas: 1, labels: {a: "1"}}
  db:
    image: db
"#;
    let over = r#"
services:
  web:
    image: web:2
    environment: {B: "2"}
    deploy: {replicas: 4}
    depends_on: [db]
"#;
    let p = load_with(&[base, over], &[]).expect("loads");
    let web = svc(&p, "web");
    assert_eq!(web.task_template.image.as_deref(), Some("web:2"));
    assert_eq!(web.task_template.env, env_of(&[("A", "1"), ("B", "2")]));
    assert_eq!(web.mode, ServiceMode::Replicated { replicas: 4 });
    assert_eq!(web.labels, env_of(&[("a", "1")]));
    assert_eq!(web.depends_on[0].service, "db");
}

#[test]
fn external_networks_and_named_volumes_keep_their_names_and_unused_networks_are_not_created() {
    let p = ok(r#"
services:
  web:
    image: web
    networks: [outside, default]
    volumes: [shared:/s, cache:/c, mine:/m]
networks:
  outside: {external: true, name: corp-net}
  spare: {}
volumes:
  shared: {external: true}
  cache: {name: global-cache}
  mine: {}
"#);
    let web = svc(&p, "web");
    let targets: Vec<&str> = web.networks.iter().map(|n| n.target.as_str()).collect();
    assert_eq!(targets, ["corp-net", "default"]);
    let sources: Vec<&str> = web.task_template.mounts.iter().map(|m| m.source.as_str()).collect();
    assert_eq!(sources, ["shared", "global-cache", "mine"]);
    let names: Vec<&str> = p.stack.networks.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["default"], "only the stack's own networks that services use");
    assert_eq!(p.stack.volumes, ["mine"]);
    assert_eq!(p.warnings, ["network spare is declared but no service uses it: it is not created"]);
    // The stack's own names must not be mistaken for an external one.
    let e = errors("services: {a: {image: x, networks: [ext, default]}}\nnetworks: {ext: {external: true, name: default}}");
    assert_eq!(e, ["networks.ext.name: default is also a network of this stack"]);
}

#[test]
fn the_name_is_reported_and_scalars_parse_like_docker() {
    let p = ok("name: shop\nservices: {a: {image: x}}");
    assert_eq!(p.name.as_deref(), Some("shop"));
    assert_eq!(convert::parse_duration("1h2m3.5s"), Ok(Duration::from_millis(3_723_500)));
    assert_eq!(convert::parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert!(convert::parse_duration("10").is_err());
    assert_eq!(convert::parse_bytes("1.5g"), Ok(3 << 29));
    assert_eq!(convert::parse_bytes("100"), Ok(100));
    assert_eq!(convert::parse_bytes("64MB"), Ok(64 << 20));
    assert_eq!(convert::parse_cpus("1.25"), Ok(1_250_000_000));
    assert!(convert::parse_cpus("1.5.2").is_err());
}

#[test]
fn env_files_parse_like_dotenv() {
    assert_eq!(
        parse_env_file("# c\n\nA=1\nexport B = two \nC=\"x\\ny\"\nD='$lit'\nE\nF=v # note\n"),
        Ok(vec![
            ("A".into(), Some("1".into())),
            ("B".into(), Some("two".into())),
            ("C".into(), Some("x\ny".into())),
            ("D".into(), Some("$lit".into())),
            ("E".into(), None),
            ("F".into(), Some("v".into())),
        ])
    );
    assert_eq!(parse_env_file("A B=1"), Err("line 1: expected KEY=VALUE, got \"A B=1\"".into()));
}

#[test]
fn project_dir_is_the_files_directory() {
    assert_eq!(project_dir(Path::new("stack.yml")), PathBuf::from("."));
    assert_eq!(project_dir(Path::new("/srv/app/stack.yml")), PathBuf::from("/srv/app"));
}

#[test]
fn secrets_and_configs_from_files_external_or_renamed() {
    let p = ok(r#"
services:
  web:
    image: web
    secrets:
      - db_pw
      - source: tls
        target: /etc/tls.key
        uid: "100"
        gid: 101
        mode: 0400
      - {source: shared, mode: 256}
    configs:
      - source: app
        target: /etc/app.conf
        mode: 0o440
secrets:
  db_pw:
    file: ./secrets/db.pw
    labels: [rotated=no]
  tls:
    file: secrets/db.pw
    name: tls-v2
  shared:
    external: true
    name: org-shared
  unused:
    external: {name: other}
configs:
  app:
    file: /proj/app.conf
"#);
    let t = &svc(&p, "web").task_template;
    let r = |i: usize| {
        (
            t.secrets[i].source.as_str(),
            t.secrets[i].target.as_str(),
            t.secrets[i].uid,
            t.secrets[i].gid,
            t.secrets[i].mode,
        )
    };
    // The stack's own by key (the managers name them); an external one by its name, at the key's path.
    assert_eq!(r(0), ("db_pw", "", 0, 0, 0o444));
    assert_eq!(r(1), ("tls", "/etc/tls.key", 100, 101, 0o400));
    assert_eq!(r(2), ("org-shared", "shared", 0, 0, 256));
    assert_eq!((t.configs[0].source.as_str(), t.configs[0].mode), ("app", 0o440));
    // Every declared one that is not external, with its data read from its file.
    let s = &p.stack;
    let own: Vec<(&str, Option<&str>)> =
        s.secrets.iter().map(|x| (x.key.as_str(), x.name.as_deref())).collect();
    assert_eq!(own, [("db_pw", None), ("tls", Some("tls-v2"))]);
    assert_eq!(s.secrets[0].data.as_bytes(), b"hunter2\n");
    assert_eq!(s.secrets[0].labels.get("rotated").map(String::as_str), Some("no"));
    assert!(!format!("{s:?}").contains("hunter2"), "never in Debug output");
    assert_eq!(s.configs[0].data.as_bytes(), b"listen 80\n");
    // Scoped as the managers do it.
    let scoped = s.scoped("app").expect("scoped");
    let t = &scoped.services[0].task_template;
    assert_eq!((t.secrets[0].source.as_str(), t.secrets[0].target.as_str()), ("app_db_pw", "db_pw"));
    assert_eq!(t.secrets[1].source, "tls-v2");
    assert_eq!(t.secrets[2].source, "org-shared");
    assert_eq!(t.configs[0].source, "app_app");

    let e = errors(
        r#"
services:
  web:
    image: web
    secrets: [nope, {target: /x}, {source: pw, uid: www, mode: rw}]
    configs: [pw]
secrets:
  pw: {file: ./missing}
  env: {environment: PW}
  drv: {driver: vault, file: ./app.conf}
  ext: {external: true, file: ./app.conf}
  none: {}
  blank: {file: ./empty}
  clash: {external: true, name: pw}
"#,
    );
    let want = [
        "services.web.secrets[0]: secret nope is not declared in the top-level secrets",
        "services.web.secrets[1]: source is required",
        "services.web.secrets[2].uid: expected a numeric id, got \"www\"",
        "services.web.secrets[2].mode: expected a file mode (e.g. 0440), got \"rw\"",
        "services.web.configs[0]: config pw is not declared in the top-level configs",
        "secrets.pw.file: cannot read /proj/missing: no such file",
        "secrets.env.environment: not supported by Shoal: the data comes from a file: write it into one and name it in file:",
        "secrets.drv.driver: not supported by Shoal: secret drivers: the managers keep the data themselves",
        "secrets.ext.file: an external secret exists already: file: is for the stack's own",
        "secrets.none: file: is required (the secret's data), or external: true for an existing secret",
        "secrets.env: file: is required (the secret's data), or external: true for an existing secret",
        "secrets.blank.file: /proj/empty is empty: a secret needs data",
        "secrets.clash.name: pw is also a secret of this stack",
    ];
    for w in want {
        assert!(e.iter().any(|x| x == w), "missing {w:?} in\n{}", e.join("\n"));
    }
    assert_eq!(e.len(), want.len(), "{}", e.join("\n"));
    // An external name that is also one of the stack's own.
    let e = errors("services: {web: {image: web}}\nsecrets:\n  pw: {file: ./app.conf}\n  clash: {external: true, name: pw}\n");
    assert_eq!(e, ["secrets.clash.name: pw is also a secret of this stack"]);
}
