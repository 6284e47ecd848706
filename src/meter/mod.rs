//! Energy metering: sensors (NVML, RAPL, estimate) behind one trait, a sampler thread and
//! measurement windows.

mod error;
mod estimate;
mod nvml;
mod period;
mod rapl;
mod sampler;
mod sensor;
mod window;

pub use error::MeterError;
pub use estimate::{proc_stat_cpu_s, process_cpu_s, EstimateSensor};
pub use nvml::{counter_delta_mj, NvmlSensor, NVML_LIB_ENV};
pub use period::{
    attribute_by_duration, block_steps, detect_update_period, period_from_readings, UpdatePeriod,
    BLOCK_MARGIN, DETECT_FOR, MAX_BLOCK_STEPS, SAFE_UPDATES_PER_WINDOW,
};
pub use rapl::{wrapped_delta_uj, RaplSensor, DEFAULT_POWERCAP_ROOT, POWERCAP_ROOT_ENV};
pub use sampler::{Meter, DEFAULT_SAMPLE_HZ};
pub use sensor::{
    open_host_sensor, open_sensor, EstimateParams, GpuSelector, Reading, Sensor, SensorChoice,
    Workplace,
};
pub use window::{trapezoid_j, trapezoid_step_j, Window, WindowEnergy};
