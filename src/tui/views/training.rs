//! Training: loss curves of both models against tokens trained and against training FLOPs (GLaM's
//! data-efficiency view), and what each needed to reach a common loss.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::symbols::Marker;
use ratatui::text::Line;
use ratatui::widgets::{Block, Chart, Dataset, GraphType, Paragraph, Row, Table, Widget};

use super::charts::{axis, bounds, thin, Series};
use crate::tui::format::or_dash;
use crate::tui::state::{LossPoint, RunState, TrainingCurve};
use crate::tui::theme;
use crate::units::{count, loss};
use crate::vocab::Role;

const ROLES: [Role; 2] = [Role::Sparse, Role::Dense];
/// Training losses are averaged over this many steps before comparing models.
const SMOOTH: usize = 5;

/// Moving average of the training loss over the last `w` steps, at each step.
pub fn smoothed(points: &[LossPoint], w: usize) -> Vec<LossPoint> {
    let w = w.max(1);
    let mut out = Vec::with_capacity(points.len());
    let mut sum = 0.0;
    for (i, p) in points.iter().enumerate() {
        sum += p.loss;
        if i >= w {
            sum -= points[i - w].loss;
        }
        out.push(LossPoint {
            loss: sum / (i + 1).min(w) as f64,
            ..*p
        });
    }
    out
}

/// The loss both models reached (the higher of their best smoothed losses), and the first point
/// where each got there. `None` unless both models have training losses.
pub fn common_loss(a: &TrainingCurve, b: &TrainingCurve) -> Option<(f64, LossPoint, LossPoint)> {
    let (sa, sb) = (
        smoothed(&a.train_loss, SMOOTH),
        smoothed(&b.train_loss, SMOOTH),
    );
    let best = |s: &[LossPoint]| s.iter().map(|p| p.loss).fold(f64::INFINITY, f64::min);
    let target = best(&sa).max(best(&sb));
    if !target.is_finite() {
        return None;
    }
    let first = |s: &[LossPoint]| s.iter().find(|p| p.loss <= target).copied();
    Some((target, first(&sa)?, first(&sb)?))
}

pub fn draw(s: &RunState, area: Rect, buf: &mut Buffer) {
    if s.training
        .values()
        .all(|c| c.train_loss.is_empty() && c.val_loss.is_empty())
    {
        Paragraph::new(Line::styled("No training losses yet.", theme::dim())).render(area, buf);
        return;
    }
    let [charts, table] = Layout::vertical([Constraint::Min(8), Constraint::Length(6)]).areas(area);
    let [by_tokens, by_flops] = Layout::horizontal([Constraint::Percentage(50); 2]).areas(charts);
    loss_chart(s, |p| p.tokens, "tokens trained", "tok", by_tokens, buf);
    loss_chart(
        s,
        |p| p.flops,
        "training FLOPs (executed)",
        "FLOP",
        by_flops,
        buf,
    );
    efficiency_table(s, table, buf);
}

fn loss_chart(
    s: &RunState,
    x_of: fn(&LossPoint) -> f64,
    x_title: &str,
    x_unit: &str,
    area: Rect,
    buf: &mut Buffer,
) {
    let max_points = 2 * area.width as usize;
    let series: Vec<(Role, Series, Series)> = ROLES
        .iter()
        .filter_map(|r| {
            let c = s.training.get(r)?;
            let pts = |v: &[LossPoint]| {
                thin(
                    &v.iter().map(|p| (x_of(p), p.loss)).collect::<Vec<_>>(),
                    max_points,
                )
            };
            Some((*r, pts(&c.train_loss), pts(&c.val_loss)))
        })
        .collect();
    let all = series
        .iter()
        .flat_map(|(_, t, v)| [t.as_slice(), v.as_slice()]);
    let (Some(x), Some(y)) = (
        bounds(all.clone(), |p| p.0).map(|[_, hi]| [0.0, hi]),
        bounds(all, |p| p.1),
    ) else {
        return;
    };
    let mut datasets = Vec::new();
    for (role, train, val) in &series {
        let name = role.label();
        datasets.push(
            Dataset::default()
                .name(format!("{name} train"))
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(theme::role(*role))
                .data(train),
        );
        if !val.is_empty() {
            datasets.push(
                Dataset::default()
                    .name(format!("{name} val"))
                    .marker(Marker::Block)
                    .graph_type(GraphType::Scatter)
                    .style(theme::role(*role))
                    .data(val),
            );
        }
    }
    Chart::new(datasets)
        .block(Block::bordered().title(format!(" loss (nats/token) vs {x_title} ")))
        .x_axis(axis("", x, x_unit).style(theme::dim()))
        .y_axis(axis("", y, "").style(theme::dim()))
        .render(area, buf);
}

fn efficiency_table(s: &RunState, area: Rect, buf: &mut Buffer) {
    let common = match (s.training.get(&Role::Sparse), s.training.get(&Role::Dense)) {
        (Some(a), Some(b)) => common_loss(a, b),
        _ => None,
    };
    let target = common.map(|c| loss(c.0));
    let header = Row::new([
        "model".to_string(),
        "tokens".into(),
        "FLOPs".into(),
        "train loss".into(),
        "val loss".into(),
        format!("tokens to loss {}", or_dash(target.clone())),
        format!("FLOPs to loss {}", or_dash(target)),
    ])
    .style(theme::header());
    let rows = ROLES.iter().filter_map(|&r| {
        let c = s.training.get(&r)?;
        let reach = common.map(|(_, a, b)| if r == Role::Sparse { a } else { b });
        Some(
            Row::new([
                format!("{} {}", r.label(), s.model_name(r).unwrap_or("")),
                count(c.tokens as f64),
                count(c.flops),
                or_dash(c.train_loss.last().map(|p| loss(p.loss))),
                or_dash(c.val_loss.last().map(|p| loss(p.loss))),
                or_dash(reach.map(|p| count(p.tokens))),
                or_dash(reach.map(|p| count(p.flops))),
            ])
            .style(theme::role(r)),
        )
    });
    Table::new(
        rows,
        [
            Constraint::Length(22),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(10),
            Constraint::Length(9),
            Constraint::Length(22),
            Constraint::Length(22),
        ],
    )
    .header(header)
    .block(Block::bordered().title(format!(
        " data efficiency: first step whose mean loss over {SMOOTH} steps reaches the loss both models reached "
    )))
    .render(area, buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(losses: &[f64]) -> TrainingCurve {
        TrainingCurve {
            train_loss: losses
                .iter()
                .enumerate()
                .map(|(i, &l)| LossPoint {
                    tokens: (i + 1) as f64 * 100.0,
                    flops: (i + 1) as f64 * 1e9,
                    loss: l,
                })
                .collect(),
            ..TrainingCurve::default()
        }
    }

    #[test]
    fn the_moving_average_covers_at_most_w_steps() {
        let s = smoothed(&curve(&[4.0, 2.0, 0.0]).train_loss, 2);
        let l: Vec<f64> = s.iter().map(|p| p.loss).collect();
        assert_eq!(l, vec![4.0, 3.0, 1.0]);
    }

    #[test]
    fn the_common_loss_is_the_worse_models_best_and_the_faster_model_gets_there_first() {
        // Constant losses, so smoothing leaves them: sparse reaches 2.0 at its 2nd step, dense
        // only gets down to 2.5, at its 3rd; the common loss is 2.5, reached by sparse at step 2.
        let sparse = curve(&[3.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]);
        let dense = curve(&[3.0, 3.0, 2.5, 2.5, 2.5, 2.5, 2.5]);
        let (target, a, b) = common_loss(&sparse, &dense).unwrap();
        let (sa, sb) = (
            smoothed(&sparse.train_loss, SMOOTH),
            smoothed(&dense.train_loss, SMOOTH),
        );
        let best_dense = sb.iter().map(|p| p.loss).fold(f64::INFINITY, f64::min);
        assert_eq!(target, best_dense);
        assert!(a.tokens < b.tokens, "{a:?} {b:?}");
        assert_eq!(a, *sa.iter().find(|p| p.loss <= target).unwrap());
    }
}
