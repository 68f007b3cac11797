//! `sluice kafka ...`: load data into Kafka topics and look at them, for
//! demos and tests (the pipeline's own connectors are in `sluice-kafka`).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use sluice_connectors::datagen::{ClickConfig, Synthetic, TaxiConfig, TurbineConfig};
use sluice_kafka::KafkaSourceConfig;
use sluice_types::{Record, Source};

/// Broker address shared by every `sluice kafka` command.
#[derive(Args)]
pub struct Broker {
    /// Bootstrap servers.
    #[arg(long, env = "SLUICE_KAFKA_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
}

/// `sluice kafka ...`.
#[derive(Subcommand)]
pub enum KafkaCommand {
    /// Create a topic (no-op if it exists).
    CreateTopic {
        /// Topic name.
        topic: String,
        /// Partitions.
        #[arg(long, default_value_t = 4)]
        partitions: usize,
        #[command(flatten)]
        broker: Broker,
    },
    /// Load records into a topic: generated ones, or the lines of a file.
    Produce(ProduceArgs),
    /// Print a topic's records from the beginning up to its current end.
    Consume(ConsumeArgs),
}

/// A built-in synthetic dataset (`--generator`).
#[derive(Clone, Copy, ValueEnum)]
pub enum Dataset {
    /// NYC taxi trips (the `generator` source).
    Taxi,
    /// Wind-turbine readings (the `turbines` source).
    Turbines,
    /// Web-analytics clicks (the `clicks` source).
    Clicks,
}

/// Arguments of `sluice kafka produce`.
#[derive(Args)]
pub struct ProduceArgs {
    /// Topic to write (created with --partitions if missing).
    topic: String,
    /// Generate records with this built-in generator.
    #[arg(long, conflicts_with = "lines")]
    generator: Option<Dataset>,
    /// Generator settings as key=value (the keys of its `[[sources]]` table,
    /// values in JSON or plain strings), e.g. --set count=100000 --set seed=7.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    /// Send each line of this file as one record value, unparsed.
    #[arg(long)]
    lines: Option<PathBuf>,
    /// Partitions of the topic if it has to be created.
    #[arg(long, default_value_t = 4)]
    partitions: usize,
    #[command(flatten)]
    broker: Broker,
}

/// Arguments of `sluice kafka consume`.
#[derive(Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    topic: String,
    /// Also read records of open and aborted transactions.
    #[arg(long)]
    read_uncommitted: bool,
    /// Print each record's key, partition, offset and headers as well (JSON lines).
    #[arg(long)]
    verbose: bool,
    /// Stop after this many records.
    #[arg(long)]
    max: Option<u64>,
    #[command(flatten)]
    broker: Broker,
}

/// Run a `sluice kafka` command.
pub fn run(cmd: KafkaCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KafkaCommand::CreateTopic {
            topic,
            partitions,
            broker,
        } => {
            let created = sluice_kafka::admin::ensure_topic(&broker.bootstrap, &topic, partitions)?;
            println!(
                "{} topic `{topic}`",
                if created { "created" } else { "kept existing" }
            );
            Ok(ExitCode::SUCCESS)
        }
        KafkaCommand::Produce(args) => produce(args),
        KafkaCommand::Consume(args) => consume(args),
    }
}

fn produce(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let records: Box<dyn Iterator<Item = Record>> = match (&args.generator, &args.lines) {
        (Some(g), None) => {
            let mut settings = serde_json::Map::new();
            for kv in &args.settings {
                let Some((k, v)) = kv.split_once('=') else {
                    bail!("--set `{kv}`: expected KEY=VALUE, e.g. --set count=1000")
                };
                let value = serde_json::from_str(v)
                    .unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
                settings.insert(k.to_string(), value);
            }
            let settings = serde_json::Value::Object(settings);
            let bad = |e: serde_json::Error| {
                anyhow::anyhow!("--set: {e}\n  help: use the keys of the generator's [[sources]] table (see README.md)")
            };
            let source: Box<dyn Source> = match g {
                Dataset::Taxi => Box::new(Synthetic::new(
                    &serde_json::from_value::<TaxiConfig>(settings).map_err(bad)?,
                    0,
                )?),
                Dataset::Turbines => Box::new(Synthetic::new(
                    &serde_json::from_value::<TurbineConfig>(settings).map_err(bad)?,
                    0,
                )?),
                Dataset::Clicks => Box::new(Synthetic::new(
                    &serde_json::from_value::<ClickConfig>(settings).map_err(bad)?,
                    0,
                )?),
            };
            Box::new(drain(source))
        }
        (None, Some(path)) => {
            let file =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let lines = std::io::BufReader::new(file).lines().map_while(Result::ok);
            Box::new(lines.map(|l| Record::from_value(l.into_bytes())))
        }
        _ => bail!("say what to produce: --generator taxi|turbines|clicks, or --lines FILE"),
    };
    let bootstrap = &args.broker.bootstrap;
    if sluice_kafka::admin::ensure_topic(bootstrap, &args.topic, args.partitions)? {
        eprintln!(
            "created topic `{}` with {} partitions",
            args.topic, args.partitions
        );
    }
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {pos} records to {msg} ({per_sec})")
                .expect("the template is valid"),
        );
        bar.set_message(format!("`{}`", args.topic));
        bar
    } else {
        ProgressBar::hidden()
    };
    let started = std::time::Instant::now();
    let n = sluice_kafka::admin::produce(bootstrap, &args.topic, records, |n| bar.set_position(n))?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "produced {n} records to `{}` in {secs:.1} s ({:.0} records/s)",
        args.topic,
        n as f64 / secs.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

/// Every record of a bounded source, in order.
fn drain(mut source: Box<dyn Source>) -> impl Iterator<Item = Record> {
    let mut buffer = Vec::new().into_iter();
    std::iter::from_fn(move || loop {
        if let Some(r) = buffer.next() {
            return Some(r);
        }
        match source.poll_batch(8192) {
            Ok(Some(batch)) => buffer = batch.into_iter(),
            Ok(None) => return None,
            Err(e) => {
                eprintln!("error: generating records: {e}");
                return None;
            }
        }
    })
}

fn consume(args: ConsumeArgs) -> anyhow::Result<ExitCode> {
    let config = KafkaSourceConfig {
        bootstrap: args.broker.bootstrap.clone(),
        topic: args.topic.clone(),
        group: Some(format!("sluice.console.{}", std::process::id())),
        start: Default::default(),
        stop_at_end: true,
        read_committed: !args.read_uncommitted,
        timestamps: true,
        properties: Default::default(),
    };
    let mut source = sluice_kafka::KafkaSource::new(
        &config,
        "console",
        "consume",
        0,
        sluice_kafka::Subtask::default(),
        Arc::default(),
    )?;
    let mut out = std::io::stdout().lock();
    let mut n = 0u64;
    while let Some(batch) = source.poll_batch(1024)? {
        for r in batch {
            if args.max.is_some_and(|m| n >= m) {
                return Ok(ExitCode::SUCCESS);
            }
            n += 1;
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            if args.verbose {
                let p = r.position.unwrap_or(sluice_types::Position {
                    source: 0,
                    split: 0,
                    offset: 0,
                });
                let headers: serde_json::Map<String, serde_json::Value> = r
                    .headers
                    .iter()
                    .map(|h| (h.name.clone(), text(&h.value).into()))
                    .collect();
                let line = serde_json::json!({ "partition": p.split, "offset": p.offset, "key": r.key.as_deref().map(text), "value": text(&r.value), "timestamp": r.event_time, "headers": headers });
                writeln!(out, "{line}")?;
            } else {
                out.write_all(&r.value)?;
                out.write_all(b"\n")?;
            }
        }
    }
    eprintln!("{n} records");
    Ok(ExitCode::SUCCESS)
}
