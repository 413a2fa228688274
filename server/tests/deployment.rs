//! The Docker deployment, checked without a Docker engine (the machines that run these tests have none):
//! docker-compose.yml parses, wires the services together as the README says, and passes every variable the
//! server reads; the Dockerfile builds with the very command `test.sh` runs.

#![allow(clippy::unwrap_used)] // in a test, a panic is the failure report

mod common;

use common::server_variables;
use yaml_rust2::{Yaml, YamlLoader};

fn project_file(path: &str) -> String {
    std::fs::read_to_string(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn compose() -> Yaml {
    let mut documents =
        YamlLoader::load_from_str(&project_file("docker-compose.yml")).expect("docker-compose.yml parses");
    assert_eq!(documents.len(), 1);
    documents.remove(0)
}

fn keys(map: &Yaml) -> Vec<&str> {
    map.as_hash().map(|h| h.keys().filter_map(Yaml::as_str).collect()).unwrap_or_default()
}

#[test]
fn compose_runs_scalable_server_nodes_with_postgres_redis_and_a_proxy() {
    let compose = compose();
    let services = &compose["services"];
    assert_eq!(keys(services), ["server", "caddy", "postgres", "redis"]);

    let server = &services["server"];
    assert_eq!(server["build"].as_str(), Some("."), "the server is built from this repository's Dockerfile");
    // `--scale server=N` needs nodes without a fixed name or a published port.
    assert!(server["container_name"].is_badvalue() && server["ports"].is_badvalue(), "server nodes are scalable");
    for dependency in ["postgres", "redis"] {
        assert_eq!(server["depends_on"][dependency]["condition"].as_str(), Some("service_healthy"), "{dependency}");
    }
    for service in ["postgres", "redis", "caddy"] {
        assert!(!services[service]["healthcheck"]["test"].is_badvalue(), "{service} has a health check");
    }
    for (service, path) in [("postgres", "/var/lib/postgresql/data"), ("redis", "/data"), ("caddy", "/data")] {
        let volumes = services[service]["volumes"].as_vec().unwrap();
        assert!(
            volumes.iter().any(|v| v.as_str().is_some_and(|v| v.ends_with(&format!(":{path}")))),
            "{service} keeps {path}"
        );
        let volume = volumes[0].as_str().unwrap().split(':').next().unwrap();
        assert!(keys(&compose["volumes"]).contains(&volume) || volume.starts_with('.'), "{volume} is declared");
    }
}

#[test]
fn compose_passes_every_variable_the_server_reads() {
    let compose = compose();
    let environment = &compose["services"]["server"]["environment"];
    let named = keys(environment);
    for variable in server_variables() {
        assert!(named.contains(&variable.as_str()), "docker-compose.yml names {variable}");
    }
    let database = environment["DATABASE_URL"].as_str().unwrap();
    assert!(
        database.starts_with("postgres://multichat:") && database.ends_with("@postgres:5432/multichat"),
        "{database}"
    );
    assert_eq!(environment["REDIS_URL"].as_str(), Some("redis://redis:6379"));
    assert_eq!(environment["MULTICHAT_BIND"].as_str(), Some("0.0.0.0:8000"));
    // The login throttle trusts X-Forwarded-For from the proxy alone.
    let proxy = compose["services"]["caddy"]["networks"]["default"]["ipv4_address"].as_str().unwrap();
    assert_eq!(environment["MULTICHAT_TRUSTED_PROXIES"].as_str(), Some(proxy));
}

#[test]
fn the_proxy_balances_over_every_server_node() {
    let compose = compose();
    let mounts = compose["services"]["caddy"]["volumes"].as_vec().unwrap();
    assert!(mounts.iter().any(|m| m.as_str() == Some("./deploy/Caddyfile:/etc/caddy/Caddyfile:ro")));
    let caddyfile = project_file("deploy/Caddyfile");
    let directives: Vec<&str> = caddyfile.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    assert!(directives.contains(&"dynamic a server 8000 {"), "every node of the service, found by name:\n{caddyfile}");
    assert!(directives.contains(&"lb_policy least_conn"), "{caddyfile}");
}

#[test]
fn the_dockerfile_builds_the_server_alone_with_the_command_ci_runs() {
    let dockerfile = project_file("Dockerfile");
    let command = "cargo build --release --locked -p multichat-server";
    assert!(dockerfile.contains(command), "{dockerfile}");
    let test_sh = project_file("test.sh");
    assert!(test_sh.lines().any(|l| l.trim() == command), "test.sh runs the Dockerfile's build command");
    for instruction in ["USER multichat", "EXPOSE 8000", "VOLUME [\"/data\"]", "CMD [\"multichat-server\", \"serve\"]"]
    {
        assert!(dockerfile.contains(instruction), "Dockerfile: {instruction}");
    }
    assert!(dockerfile.contains("HEALTHCHECK") && dockerfile.contains("\"multichat-server\", \"healthcheck\""));
}
