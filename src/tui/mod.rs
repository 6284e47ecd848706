//! The live dashboard: state, views and key handling (the only module that knows ratatui).
