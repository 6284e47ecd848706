//! Experts: tokens routed to each expert per MoE layer, load imbalance, dropped assignments, the
//! auxiliary loss, and which experts each corpus domain goes to.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Bar, BarChart, BarGroup, Block, Paragraph, Row, Table, Widget};

use crate::tui::format::or_dash;
use crate::tui::state::{imbalance, ExpertLoad, RunState};
use crate::tui::theme;
use crate::units::{count, percent};
use crate::vocab::Role;

/// Rows a layer's bar chart needs to be readable.
const LAYER_ROWS: u16 = 7;

pub fn draw(s: &RunState, area: Rect, buf: &mut Buffer) {
    let Some((&role, load)) = s.experts.iter().find(|(_, x)| !x.tokens.is_empty()) else {
        Paragraph::new(Line::styled(
            "No expert routing yet: the sparse model's training steps report it.",
            theme::dim(),
        ))
        .render(area, buf);
        return;
    };
    let profile = s.header.as_ref().and_then(|h| h.model(role));
    // Layer numbers as the model counts them (1-based), falling back to MoE-layer indices.
    let layer_names: Vec<String> = match profile {
        Some(p) => (0..p.layers)
            .filter(|&i| p.is_moe_layer(i))
            .map(|i| format!("layer {}", i + 1))
            .collect(),
        None => (0..load.tokens.len())
            .map(|i| format!("MoE layer {i}"))
            .collect(),
    };
    let name = |i: usize| {
        layer_names
            .get(i)
            .cloned()
            .unwrap_or(format!("MoE layer {i}"))
    };
    let domain_rows = (load.domains.len() as u16 + 3).min(10);
    let [top, bars, domains] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(LAYER_ROWS),
        Constraint::Length(if load.domains.is_empty() {
            0
        } else {
            domain_rows
        }),
    ])
    .areas(area);
    summary_lines(s, role, load, top, buf);
    layer_charts(role, load, &name, bars, buf);
    if !load.domains.is_empty() {
        domain_table(load, &name, domains, buf);
    }
}

fn summary_lines(s: &RunState, role: Role, load: &ExpertLoad, area: Rect, buf: &mut Buffer) {
    let profile = s.header.as_ref().and_then(|h| h.model(role));
    let shape = profile.map_or(String::new(), |p| {
        let cap = p
            .capacity_factor
            .map_or("no capacity limit".to_string(), |c| {
                format!("capacity factor {c}")
            });
        format!(
            "{}: {} experts, top-{}, {cap} · ",
            p.name, p.experts, p.top_k
        )
    });
    let total: u64 = load.tokens.first().map_or(0, |l| l.iter().sum());
    let last_aux = load.aux_loss.last().map(|a| format!("{a:.4}"));
    let tail = &load.aux_loss[load.aux_loss.len().saturating_sub(10)..];
    let mean_aux =
        (!tail.is_empty()).then(|| format!("{:.4}", tail.iter().sum::<f64>() / tail.len() as f64));
    let dropped_style = if load.dropped > 0 {
        theme::warn()
    } else {
        ratatui::style::Style::new()
    };
    Paragraph::new(vec![
        Line::from(format!(
            "{shape}{} assignments per MoE layer over {} training steps",
            count(total as f64),
            load.aux_loss.len().max(s.steps.get(&(role, crate::vocab::Phase::Train)).copied().unwrap_or(0) as usize)
        )),
        Line::styled(
            format!(
                "dropped by capacity: {} assignments in {} steps (all phases) · aux loss: last {}, mean of last {} {}",
                load.dropped,
                load.steps_with_drops,
                or_dash(last_aux),
                tail.len(),
                or_dash(mean_aux)
            ),
            dropped_style,
        ),
    ])
    .render(area, buf);
}

fn layer_charts(
    role: Role,
    load: &ExpertLoad,
    name: &dyn Fn(usize) -> String,
    area: Rect,
    buf: &mut Buffer,
) {
    let n = load.tokens.len();
    let fit = ((area.height / LAYER_ROWS) as usize).max(1);
    let shown = n.min(fit);
    let more = n - shown;
    let mut constraints = vec![Constraint::Ratio(1, shown as u32); shown];
    if more > 0 {
        constraints.push(Constraint::Length(1));
    }
    let rows = Layout::vertical(constraints).split(area);
    for (i, counts) in load.tokens.iter().take(shown).enumerate() {
        let overall = imbalance(counts).map(|x| format!("{x:.2}"));
        let last = load
            .last_step
            .get(i)
            .and_then(|c| imbalance(c))
            .map(|x| format!("{x:.2}"));
        let block = Block::bordered().title(format!(
            " {} · tokens per expert · imbalance max/mean {} overall, {} last step ",
            name(i),
            or_dash(overall),
            or_dash(last)
        ));
        let inner_w = block.inner(rows[i]).width as usize;
        let e = counts.len().max(1);
        let bar_width = ((inner_w + 1) / e).saturating_sub(1).clamp(1, 15) as u16;
        let bars: Vec<Bar> = counts
            .iter()
            .enumerate()
            .map(|(j, &c)| {
                Bar::new(c)
                    .label(Line::from(format!("e{j}")))
                    .text_value(count(c as f64))
            })
            .collect();
        BarChart::default()
            .block(block)
            .data(BarGroup::new(bars))
            .bar_width(bar_width)
            .bar_gap(1)
            .bar_style(theme::role(role))
            .value_style(theme::selected())
            .render(rows[i], buf);
    }
    if more > 0 {
        Line::styled(
            format!("… {more} more MoE layers (enlarge the terminal to see them)"),
            theme::dim(),
        )
        .render(rows[shown], buf);
    }
}

/// The `k` experts a domain's tokens went to most, with their shares: "e3 41% e5 22%".
pub fn top_experts(counts: &[u64], k: usize) -> String {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return "—".into();
    }
    let mut idx: Vec<usize> = (0..counts.len()).collect();
    idx.sort_by(|&a, &b| counts[b].cmp(&counts[a]).then(a.cmp(&b)));
    idx.iter()
        .take(k)
        .map(|&e| format!("e{e} {}", percent(counts[e] as f64 / total as f64, 0)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn domain_table(load: &ExpertLoad, name: &dyn Fn(usize) -> String, area: Rect, buf: &mut Buffer) {
    let layers = load.domains.values().map(|v| v.len()).max().unwrap_or(0);
    let mut header = vec!["domain".to_string()];
    header.extend((0..layers).map(|i| format!("{}: top experts", name(i))));
    let rows = load.domains.iter().map(|(d, per_layer)| {
        let mut cells = vec![d.clone()];
        cells.extend(
            (0..layers).map(|i| per_layer.get(i).map_or("—".into(), |c| top_experts(c, 3))),
        );
        Row::new(cells)
    });
    let mut widths = vec![Constraint::Length(12)];
    widths.extend(std::iter::repeat_n(Constraint::Length(26), layers));
    Table::new(rows, widths)
        .header(Row::new(header).style(theme::header()))
        .block(
            Block::bordered().title(" which experts each corpus domain goes to (training tokens) "),
        )
        .render(area, buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_experts_are_ordered_by_share_with_ties_by_index() {
        assert_eq!(top_experts(&[10, 50, 40, 0], 2), "e1 50% e2 40%");
        assert_eq!(top_experts(&[5, 5], 3), "e0 50% e1 50%");
        assert_eq!(top_experts(&[0, 0], 2), "—");
    }
}
