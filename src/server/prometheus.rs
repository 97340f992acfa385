//! `/metrics`: what operators and jobs count through the `metrics` facade,
//! kept by a small recorder and rendered in Prometheus' text format.
//!
//! Counters and gauges are atomics behind one registry keyed by name and
//! labels; a scrape walks it in name order. Histograms are not used by
//! Eddy and are ignored.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use eddy_engine::JobStatus;

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};

/// A metric's name and its labels, sorted.
type Series = (String, Vec<(String, String)>);

#[derive(Debug, Default)]
struct Value(AtomicU64);

impl CounterFn for Value {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

/// A gauge keeps an f64's bits.
impl GaugeFn for Value {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }

    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }

    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

impl Value {
    fn update(&self, f: impl Fn(f64) -> f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some(f(f64::from_bits(bits)).to_bits())
            });
    }
}

#[derive(Debug, Default)]
struct Registry {
    counters: BTreeMap<Series, Arc<Value>>,
    gauges: BTreeMap<Series, Arc<Value>>,
    help: BTreeMap<String, String>,
}

/// The recorder: install it once with [`PrometheusRecorder::install`],
/// render with [`PrometheusRecorder::render`].
#[derive(Debug, Clone, Default)]
pub struct PrometheusRecorder {
    registry: Arc<Mutex<Registry>>,
}

fn series(key: &Key) -> Series {
    let mut labels: Vec<(String, String)> = key
        .labels()
        .map(|l| (l.key().to_string(), l.value().to_string()))
        .collect();
    labels.sort();
    (key.name().to_string(), labels)
}

impl PrometheusRecorder {
    /// Makes this the process's recorder. Metrics made before (there are
    /// none before the server starts) stay no-ops.
    pub fn install() -> Self {
        let recorder = Self::default();
        if metrics::set_global_recorder(recorder.clone()).is_err() {
            tracing::warn!("a metrics recorder was installed already: /metrics stays empty");
        }
        recorder
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every series in the text format, each name once with its TYPE.
    pub fn render(&self) -> String {
        let registry = self.registry();
        let mut out = String::new();
        let kinds = [("counter", &registry.counters), ("gauge", &registry.gauges)];
        for (kind, map) in kinds {
            let mut last = None;
            for ((name, labels), value) in map.iter() {
                if last != Some(name) {
                    if let Some(help) = registry.help.get(name) {
                        let _ = writeln!(out, "# HELP {name} {help}");
                    }
                    let _ = writeln!(out, "# TYPE {name} {kind}");
                    last = Some(name);
                }
                let bits = value.0.load(Ordering::Relaxed);
                let number = if kind == "counter" {
                    bits.to_string()
                } else {
                    format_float(f64::from_bits(bits))
                };
                let _ = writeln!(out, "{name}{} {number}", format_labels(labels));
            }
        }
        out
    }
}

/// `{a="1",b="x"}`, values escaped; nothing for no labels.
pub fn format_labels(labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Prometheus' spelling of a float (`+Inf`, `NaN`, integers without `.0`).
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        v.to_string()
    }
}

impl Recorder for PrometheusRecorder {
    fn describe_counter(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.registry()
            .help
            .insert(key.as_str().to_string(), description.to_string());
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe_counter(key, unit, description);
    }

    fn describe_histogram(&self, _key: KeyName, _unit: Option<Unit>, _description: SharedString) {}

    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        let value = self
            .registry()
            .counters
            .entry(series(key))
            .or_default()
            .clone();
        Counter::from_arc(value)
    }

    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        let value = self
            .registry()
            .gauges
            .entry(series(key))
            .or_insert_with(|| Arc::new(Value(AtomicU64::new(0f64.to_bits()))))
            .clone();
        Gauge::from_arc(value)
    }

    fn register_histogram(&self, _key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// Series the job manager knows rather than the facade, read at each
/// scrape: whether each job runs, its restarts, and each operator
/// subtask's watermark lag behind wall time.
pub fn job_series(jobs: &[JobStatus]) -> String {
    let now = eddy_operators::metrics::unix_ms() as f64;
    let mut running = String::new();
    let mut restarts = String::new();
    let mut lag = String::new();
    for job in jobs {
        let labels = format_labels(&[("job".into(), job.id.clone())]);
        let up = u8::from(job.state.is_running());
        let _ = writeln!(running, "eddy_job_running{labels} {up}");
        let _ = writeln!(restarts, "eddy_job_restarts_total{labels} {}", job.restarts);
        for op in job.metrics.operators() {
            let Some(wm) = op.watermark else { continue };
            let labels = format_labels(&[
                ("job".into(), job.id.clone()),
                ("operator".into(), op.operator.clone()),
                ("subtask".into(), op.subtask.to_string()),
            ]);
            let seconds = (now - wm as f64) / 1000.0;
            let _ = writeln!(
                lag,
                "eddy_watermark_lag_seconds{labels} {}",
                format_float(seconds)
            );
        }
    }
    let mut out = String::new();
    for (name, kind, help, body) in [
        ("eddy_job_running", "gauge", "1 while the job runs", running),
        (
            "eddy_job_restarts_total",
            "counter",
            "restarts after failures",
            restarts,
        ),
        (
            "eddy_watermark_lag_seconds",
            "gauge",
            "wall time minus the subtask's input watermark",
            lag,
        ),
    ] {
        if !body.is_empty() {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{body}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_render_in_the_text_format() {
        let recorder = PrometheusRecorder::default();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("eddy_rows_total", "job" => "j\"1", "operator" => "a").increment(3);
            metrics::counter!("eddy_rows_total", "operator" => "a", "job" => "j\"1").increment(4);
            metrics::counter!("eddy_rows_total", "job" => "j2", "operator" => "a").absolute(9);
            metrics::gauge!("eddy_watermark_ms", "job" => "j2").set(1.5);
            metrics::gauge!("eddy_watermark_ms", "job" => "j2").increment(1.0);
        });
        assert_eq!(
            recorder.render(),
            "# TYPE eddy_rows_total counter\n\
             eddy_rows_total{job=\"j\\\"1\",operator=\"a\"} 7\n\
             eddy_rows_total{job=\"j2\",operator=\"a\"} 9\n\
             # TYPE eddy_watermark_ms gauge\n\
             eddy_watermark_ms{job=\"j2\"} 2.5\n"
        );
    }
}
