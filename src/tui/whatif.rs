//! The Projections view's what-if settings, changed by keys; the table follows them at once.

use ratatui::crossterm::event::KeyCode;

/// Settings that override the hardware profiles' defaults for every row of the projection table.
/// `None` means "each profile's own default".
#[derive(Debug, Clone, PartialEq)]
pub struct WhatIf {
    /// The highlighted hardware row.
    pub selected: usize,
    /// Chips the full-size GLaM run is spread over (GLaM 64B/64E trained on 1,024 TPU v4 chips).
    pub chips: u32,
    /// Model FLOPs utilisation, 0..1.
    pub utilization: Option<f64>,
    pub pue: Option<f64>,
    pub grid_kg_per_kwh: Option<f64>,
}

impl Default for WhatIf {
    fn default() -> Self {
        WhatIf {
            selected: 0,
            chips: 1024,
            utilization: None,
            pue: None,
            grid_kg_per_kwh: None,
        }
    }
}

impl WhatIf {
    /// Apply a key of the Projections view; returns whether it was one.
    pub fn on_key(&mut self, code: KeyCode) -> bool {
        match code {
            KeyCode::Up => self.selected = self.selected.saturating_sub(1),
            KeyCode::Down => self.selected += 1,
            KeyCode::Char('c') => self.chips = (self.chips / 2).max(1),
            KeyCode::Char('C') => self.chips = self.chips.saturating_mul(2).min(1 << 20),
            KeyCode::Char('r') => *self = WhatIf::default(),
            _ => return false,
        }
        true
    }
}
