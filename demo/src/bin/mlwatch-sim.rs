//! `mlwatch-sim`: the simulated serving platform as a standalone process,
//! for docker-compose and for trying mlwatch against running services. It
//! serves `ServingControl` over gRPC and sends the models' traffic (and,
//! for models given an accuracy, their ground-truth labels, late) to a
//! collector; a scale-up through `ServingControl` visibly lowers latency.
//! Optionally it injects a traffic surge after a delay.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mlwatch_testkit::sim::{ModelSim, SimPlatform};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(version)]
#[command(
    name = "mlwatch-sim",
    about = "Simulated serving platform and traffic generator for mlwatch"
)]
struct Args {
    /// Address of the ServingControl gRPC server.
    #[arg(long, default_value = "127.0.0.1:50051", env = "MLWATCH_SIM_LISTEN")]
    listen: SocketAddr,
    /// Base URL of the collector's HTTP ingest.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "MLWATCH_SIM_COLLECTOR")]
    collector: String,
    /// Models as `name:version:replicas:load_rps[:accuracy]`, comma-separated;
    /// with an accuracy, the ground-truth label of each prediction is sent
    /// too (right with that probability).
    #[arg(
        long,
        default_value = "fraud:v3:2:50:0.93,recsys:v12:3:80",
        env = "MLWATCH_SIM_MODELS"
    )]
    models: String,
    /// Labels arrive this many seconds after their prediction: `MIN-MAX`
    /// (uniform) or one number.
    #[arg(long, default_value = "20-50", env = "MLWATCH_SIM_LABEL_DELAY_SECS")]
    label_delay_secs: String,
    /// Multiply the first model's load by 2.3 after this many seconds
    /// (0: never).
    #[arg(long, default_value_t = 0, env = "MLWATCH_SIM_SURGE_AFTER_SECS")]
    surge_after_secs: u64,
}

fn parse_models(spec: &str, label_delay_secs: (f64, f64)) -> anyhow::Result<Vec<ModelSim>> {
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|m| {
            let parts: Vec<&str> = m.trim().split(':').collect();
            let (name, version, replicas, load, accuracy) = match parts.as_slice() {
                [n, v, r, l] => (n, v, r, l, None),
                [n, v, r, l, a] => (n, v, r, l, Some(a)),
                _ => anyhow::bail!("models: {m:?} is not name:version:replicas:load_rps[:accuracy]"),
            };
            let mut sim = ModelSim::new(
                name,
                version,
                replicas
                    .parse()
                    .with_context(|| format!("models: replicas {replicas:?}"))?,
                load.parse().with_context(|| format!("models: load {load:?}"))?,
            );
            if let Some(a) = accuracy {
                let a: f64 = a.parse().with_context(|| format!("models: accuracy {a:?}"))?;
                anyhow::ensure!((0.0..=1.0).contains(&a), "models: accuracy {a} is outside [0, 1]");
                sim = sim
                    .with_accuracy(version, a)
                    .with_label_delay_secs(label_delay_secs.0, label_delay_secs.1);
            }
            Ok(sim)
        })
        .collect()
}

fn parse_delay(spec: &str) -> anyhow::Result<(f64, f64)> {
    let parse = |s: &str| -> anyhow::Result<f64> {
        let v: f64 = s
            .trim()
            .parse()
            .with_context(|| format!("label-delay-secs: {s:?} is not a number"))?;
        anyhow::ensure!(v >= 0.0, "label-delay-secs: {v} is negative");
        Ok(v)
    };
    match spec.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (parse(lo)?, parse(hi)?);
            anyhow::ensure!(lo <= hi, "label-delay-secs: {lo} > {hi}");
            Ok((lo, hi))
        }
        None => parse(spec).map(|v| (v, v)),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    mlwatch_common::telemetry::init(&mlwatch_common::telemetry::LogConfig::default());
    let models = parse_models(&args.models, parse_delay(&args.label_delay_secs)?)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_and_delays_parse_and_bad_ones_name_the_value() {
        let m = parse_models("fraud:v3:2:50:0.93,recsys:v12:3:80", (20.0, 50.0)).unwrap();
        assert_eq!(m[0].accuracy(), Some(0.93));
        assert_eq!(m[0].label_delay_secs, (20.0, 50.0));
        assert_eq!(m[1].accuracy(), None);
        assert_eq!(parse_delay("20-50").unwrap(), (20.0, 50.0));
        assert_eq!(parse_delay("5").unwrap(), (5.0, 5.0));
        let e = parse_models("fraud:v3:2:50:1.5", (0.0, 0.0)).unwrap_err().to_string();
        assert!(e.contains("1.5"), "{e}");
        assert!(parse_models("fraud:v3:2", (0.0, 0.0)).is_err());
        assert!(parse_delay("50-20").is_err());
    }
}
