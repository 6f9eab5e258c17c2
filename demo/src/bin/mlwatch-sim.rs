//! `mlwatch-sim`: the simulated serving platform as a standalone process,
//! for docker-compose and for trying mlwatch against running services. It
//! serves `ServingControl` over gRPC and sends the models' traffic to a
//! collector; a scale-up through `ServingControl` visibly lowers latency.
//! Optionally it injects a traffic surge after a delay.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mlwatch_demo::sim::{ModelSim, SimPlatform};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(about = "Simulated serving platform and traffic generator for mlwatch")]
struct Args {
    /// Address of the ServingControl gRPC server.
    #[arg(long, default_value = "127.0.0.1:50051", env = "MLWATCH_SIM_LISTEN")]
    listen: SocketAddr,
    /// Base URL of the collector's HTTP ingest.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "MLWATCH_SIM_COLLECTOR")]
    collector: String,
    /// Models as name:version:replicas:load_rps, comma-separated.
    #[arg(long, default_value = "fraud:v3:2:50,recsys:v12:3:80", env = "MLWATCH_SIM_MODELS")]
    models: String,
    /// Multiply the first model's load by 2.3 after this many seconds
    /// (0: never).
    #[arg(long, default_value_t = 0, env = "MLWATCH_SIM_SURGE_AFTER_SECS")]
    surge_after_secs: u64,
}

fn parse_models(spec: &str) -> anyhow::Result<Vec<ModelSim>> {
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|m| {
            let parts: Vec<&str> = m.trim().split(':').collect();
            let [name, version, replicas, load] = parts.as_slice() else {
                anyhow::bail!("models: {m:?} is not name:version:replicas:load_rps");
            };
            Ok(ModelSim::new(
                name,
                version,
                replicas
                    .parse()
                    .with_context(|| format!("models: replicas {replicas:?}"))?,
                load.parse().with_context(|| format!("models: load {load:?}"))?,
            ))
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    mlwatch_common::telemetry::init(&mlwatch_common::telemetry::LogConfig::default());
    let models = parse_models(&args.models)?;
    let names: Vec<String> = models.iter().map(|m| m.deployment.model.clone()).collect();
    let sim = SimPlatform::default();
    for m in models {
        sim.add_model(m);
    }
    let shutdown = mlwatch_common::shutdown::on_signals();
    let (addr, server) = sim
        .serve(args.listen, shutdown.clone())
        .await
        .context("serving ServingControl")?;
    tracing::info!(%addr, collector = %args.collector, models = ?names, "simulated serving platform up");
    let (_sent, traffic) = mlwatch_demo::traffic::start(
        args.collector.clone(),
        sim.clone(),
        names.clone(),
        Duration::from_millis(100),
        shutdown.clone(),
    );
    if args.surge_after_secs > 0
        && let Some(first) = names.first().cloned()
    {
        let sim = sim.clone();
        let stop: CancellationToken = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_secs(args.surge_after_secs)) => {
                    if let Some(m) = sim.model(&first) {
                        sim.set_load(&first, m.load_rps * 2.3);
                        tracing::warn!(model = %first, load_rps = m.load_rps * 2.3, "traffic surge injected");
                    }
                }
            }
        });
    }
    shutdown.cancelled().await;
    let _ = traffic.await;
    let _ = server.await;
    Ok(())
}
