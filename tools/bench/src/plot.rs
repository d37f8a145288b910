//! SVG plots of a report (plotters' SVG backend: no font files needed):
//! write and read throughput and p99 latency by concurrency for every
//! system and value size, failover times (sorted samples against the
//! targets), rebirth times against the target line, and ZooKeeper's
//! footprint over the long write run.

use std::path::Path;
use std::path::PathBuf;

use plotters::prelude::*;

use super::failover::Kill;
use super::report::Report;
use super::throughput::Op;
use super::throughput::System;

type Res = Result<(), Box<dyn std::error::Error>>;

const SIZE: (u32, u32) = (820, 480);
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws every plot the report has data for; returns the files written.
pub fn draw_all(report: &Report, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    let mut go = |name: &str, f: &dyn Fn(&Path) -> Res| -> anyhow::Result<()> {
        let p = dir.join(name);
        f(&p).map_err(|e| anyhow::anyhow!("plot {}: {e}", p.display()))?;
        out.push(p);
        Ok(())
    };
    if !report.throughput.is_empty() {
        go("write-throughput.svg", &|p| by_clients(report, p, Op::Write, false))?;
        go("write-p99.svg", &|p| by_clients(report, p, Op::Write, true))?;
        go("read-throughput.svg", &|p| by_clients(report, p, Op::Read, false))?;
        go("read-p99.svg", &|p| by_clients(report, p, Op::Read, true))?;
    }
    if !report.failover.is_empty() {
        go("failover.svg", &|p| failover(report, p))?;
    }
    if !report.rebirth.is_empty() {
        go("rebirth.svg", &|p| rebirth(report, p))?;
    }
    if report.footprint.is_some() {
        go("footprint.svg", &|p| footprint(report, p))?;
    }
    Ok(out)
}

/// Ops/s (or p99 ms) against the client count, one line per system and size.
fn by_clients(report: &Report, path: &Path, op: Op, p99: bool) -> Res {
    let mut clients: Vec<usize> = report.throughput.iter().map(|p| p.clients).collect();
    clients.sort_unstable();
    clients.dedup();
    let mut sizes: Vec<usize> = report.throughput.iter().map(|p| p.value_bytes).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let y = |p: &super::throughput::Point| if p99 { p.latency.p99_ms } else { p.ops_per_sec };
    let y_max = report
        .throughput
        .iter()
        .filter(|p| p.op == op)
        .map(y)
        .fold(0.0, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let what = if op == Op::Write {
        "writes"
    } else {
        "linearizable reads"
    };
    let caption = if p99 {
        format!("{what}: p99 latency (ms)")
    } else {
        format!("{what}: acknowledged ops/s")
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.3f64..(clients.len() as f64 - 0.7), 0f64..y_max.max(1.0))?;
    let labels = clients.clone();
    chart
        .configure_mesh()
        .x_labels(clients.len())
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 0.01 && i >= 0.0 {
                labels.get(i as usize).map(|c| c.to_string()).unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_desc("concurrent clients")
        .y_desc(if p99 { "p99 ms" } else { "ops/s" })
        .draw()?;
    let mut color = 0;
    for system in [System::Walship, System::ZkDirect, System::Etcd] {
        for &size in &sizes {
            let pts: Vec<(f64, f64)> = clients
                .iter()
                .enumerate()
                .filter_map(|(i, &c)| report.point(system, op, size, c).map(|p| (i as f64, y(p))))
                .collect();
            if pts.is_empty() {
                continue;
            }
            let c = PALETTE[color % PALETTE.len()];
            color += 1;
            let style = if size <= 100 {
                ShapeStyle::from(&c).stroke_width(2)
            } else {
                ShapeStyle::from(&c.mix(0.6)).stroke_width(2)
            };
            chart
                .draw_series(LineSeries::new(pts.clone(), style))?
                .label(format!("{} {} B", system.name(), size))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, style.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Each failover's time, sorted, against the fraction of kills.
fn failover(report: &Report, path: &Path) -> Res {
    let y_max = report
        .failover
        .iter()
        .flat_map(|f| f.samples_ms.iter().copied())
        .fold(1000.0, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "failover: signal to next acknowledged write (sorted)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..100f64, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("percent of kills at or below")
        .y_desc("ms")
        .draw()?;
    for (i, f) in report.failover.iter().enumerate() {
        let mut s = f.samples_ms.clone();
        s.sort_by(f64::total_cmp);
        let n = s.len() as f64;
        let pts: Vec<(f64, f64)> = s
            .iter()
            .enumerate()
            .map(|(k, &v)| ((k + 1) as f64 / n * 100.0, v))
            .collect();
        let c = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(pts.clone(), ShapeStyle::from(&c).stroke_width(2)))?
            .label(f.kill.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 2, c.filled())))?;
    }
    let targets = [
        (Kill::Sigkill, 400.0, "kill -9 p50 target 400 ms"),
        (Kill::Sigkill, 1000.0, "kill -9 p99 target 1 s"),
        (Kill::Sigterm, 200.0, "SIGTERM p99 target 200 ms"),
    ];
    for (k, ms, label) in targets {
        if !report.failover.iter().any(|f| f.kill == k) {
            continue;
        }
        let grey = RGBColor(120, 120, 120);
        chart
            .draw_series(LineSeries::new(vec![(0.0, ms), (100.0, ms)], grey.stroke_width(1)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Rebirth time against the bytes in ZooKeeper, with the target line.
fn rebirth(report: &Report, path: &Path) -> Res {
    let mb = |b: u64| b as f64 / 1e6;
    let x_max = report.rebirth.iter().map(|r| mb(r.w.total)).fold(1.0, f64::max) * 1.1;
    let y_max = report
        .rebirth
        .iter()
        .map(|r| r.ms.max(r.target_ms))
        .fold(2000.0, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("rebirth: empty disk to first linearizable read", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("MB held in ZooKeeper (snapshot + WAL)")
        .y_desc("ms")
        .draw()?;
    let target: Vec<(f64, f64)> = vec![(0.0, 2000.0), (x_max, 2000.0 + x_max * 10.0)];
    let grey = RGBColor(120, 120, 120);
    chart
        .draw_series(LineSeries::new(target, grey.stroke_width(1)))?
        .label("target: 2 s + size at 100 MB/s")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
    let c = PALETTE[0];
    let pts: Vec<(f64, f64)> = report.rebirth.iter().map(|r| (mb(r.w.total), r.ms)).collect();
    chart
        .draw_series(LineSeries::new(pts.clone(), ShapeStyle::from(&c).stroke_width(2)))?
        .label("measured")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
    chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
    chart.draw_series(report.rebirth.iter().map(|r| {
        Text::new(
            format!("{} keys", r.keys),
            (mb(r.w.total), r.ms + y_max * 0.03),
            ("sans-serif", 13),
        )
    }))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Bytes in ZooKeeper over the long write run.
fn footprint(report: &Report, path: &Path) -> Res {
    let f = report.footprint.as_ref().expect("checked by the caller");
    let kb = |b: u64| b as f64 / 1024.0;
    let x_max = f.samples.iter().map(|s| s.t_s).fold(1.0, f64::max) * 1.02;
    let y_max = f.samples.iter().map(|s| kb(s.w.total)).fold(1.0, f64::max) * 1.15;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let caption = format!(
        "ZooKeeper footprint: {} clients writing {} B values over {} keys",
        f.clients, f.value_bytes, f.keyspace
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("KiB in ZooKeeper")
        .draw()?;
    type Pick = fn(&super::footprint::Sample) -> u64;
    let series: [(&str, Pick); 3] = [
        ("total", |s| s.w.total),
        ("snapshot", |s| s.w.snapshot),
        ("WAL segments", |s| s.w.wal),
    ];
    for (i, (name, pick)) in series.into_iter().enumerate() {
        let c = PALETTE[i];
        let pts: Vec<(f64, f64)> = f.samples.iter().map(|s| (s.t_s, kb(pick(s)))).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), ShapeStyle::from(&c).stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 2, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
