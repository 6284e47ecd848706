/* A stand-in for libnvidia-ml.so.1 answering the calls sparsewatt makes (through nvml-wrapper
 * 0.13), with known powers and energies. Built by tests/meter_nvml_stub.rs with the system cc;
 * each test compiles its own copy, so each has its own state. Options (-D):
 *   STEP_MODE          the energy counter advances by STEP_MJ(gpu) per read, instead of
 *                      with the clock at the board power
 *   RESET_AT_READ=n    GPU 0's counter restarts from 0 at its n-th energy read (driver reset)
 *   NO_ENERGY          the energy counter is not supported (pre-Volta)
 *   NO_INSTANT         field 186 (instant power) is not supported
 *   FAIL_AFTER_READS=n the GPUs are lost after n energy reads in all: every device query
 *                      fails from then on (NVML_ERROR_GPU_IS_LOST)
 * At run time (read by nvmlInit_v2):
 *   NVML_STUB_LOST_FILE=path  the GPUs are lost from the moment this file exists
 *   NVML_STUB_UPDATE_MS=n  the clock-driven counter advances only every n ms, in steps of
 *                          n ms x the board power, like a real board's (10-100 ms)
 * GPU g draws POWER_MW(g): 150 W and 250 W. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int nvmlReturn_t;
enum { OK = 0, ERR_UNINIT = 1, ERR_ARG = 2, ERR_NOT_SUPPORTED = 3, ERR_SIZE = 7, ERR_GPU_LOST = 15 };
typedef struct { int unused; } *nvmlDevice_t;
typedef union {
    double dVal; int siVal; unsigned int uiVal; unsigned long ulVal;
    unsigned long long ullVal; long long sllVal; unsigned short usVal;
} nvmlValue_t;
typedef struct {
    unsigned int fieldId; unsigned int scopeId; long long timestamp; long long latencyUsec;
    int valueType; nvmlReturn_t nvmlReturn; nvmlValue_t value;
} nvmlFieldValue_t;
typedef struct { unsigned int gpu; unsigned int memory; } nvmlUtilization_t;
typedef struct {
    unsigned int version; unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;

#define GPUS 2
#define POWER_MW(g) ((g) == 0 ? 150000u : 250000u)
#define STEP_MJ(g) ((g) == 0 ? 1000ull : 2000ull)
#define BASE_MJ 5000000000ull

static int initialised = 0;
static struct { int unused; } devices[GPUS];
static double epoch_s[GPUS];
static unsigned long long base_mj[GPUS];
static unsigned long long energy_reads[GPUS];
static double update_s = 0.0; /* 0: the counter follows the clock continuously */
static unsigned long long all_energy_reads = 0;
static const char *lost_file = NULL;

/* Whether the GPUs have fallen off the bus (FAIL_AFTER_READS, NVML_STUB_LOST_FILE). */
static int lost(void) {
#ifdef FAIL_AFTER_READS
    if (all_energy_reads >= FAIL_AFTER_READS) return 1;
#endif
    return lost_file != NULL && access(lost_file, F_OK) == 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int index_of(nvmlDevice_t d) {
    for (int g = 0; g < GPUS; g++)
        if ((void *)d == (void *)&devices[g]) return g;
    return -1;
}

#define DEVICE_OR_FAIL(d, g)                      \
    if (!initialised) return ERR_UNINIT;          \
    int g = index_of(d);                          \
    if (g < 0) return ERR_ARG;                    \
    if (lost()) return ERR_GPU_LOST;

/* Like NVML, init and shutdown are reference counted: the state starts at the first init. */
nvmlReturn_t nvmlInit_v2(void) {
    if (initialised++ > 0) return OK;
    double t = now_s();
    for (int g = 0; g < GPUS; g++) { epoch_s[g] = t; base_mj[g] = BASE_MJ; energy_reads[g] = 0; }
    const char *ms = getenv("NVML_STUB_UPDATE_MS");
    update_s = ms ? atof(ms) / 1e3 : 0.0;
    lost_file = getenv("NVML_STUB_LOST_FILE");
    all_energy_reads = 0;
    return OK;
}

nvmlReturn_t nvmlShutdown(void) {
    if (initialised > 0) initialised--;
    return OK;
}

const char *nvmlErrorString(nvmlReturn_t r) {
    return r == OK ? "Success" : r == ERR_GPU_LOST ? "GPU is lost" : "stub error";
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    if (!initialised) return ERR_UNINIT;
    if (length < 10) return ERR_SIZE;
    snprintf(version, length, "550.54.15");
    return OK;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    if (!initialised) return ERR_UNINIT;
    *count = GPUS;
    return OK;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (!initialised) return ERR_UNINIT;
    if (index >= GPUS) return ERR_ARG;
    *device = (nvmlDevice_t)&devices[index];
    return OK;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int length) {
    DEVICE_OR_FAIL(d, g);
    snprintf(name, length, "Stub GPU %d", g);
    return OK;
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t d, unsigned long long *mj) {
    DEVICE_OR_FAIL(d, g);
#ifdef NO_ENERGY
    (void)mj;
    return ERR_NOT_SUPPORTED;
#else
    energy_reads[g]++;
    all_energy_reads++;
#ifdef RESET_AT_READ
    if (g == 0 && energy_reads[g] == RESET_AT_READ) {
        /* The driver reloaded: the counter starts again from 0. */
        base_mj[g] = 0;
        epoch_s[g] = now_s();
        energy_reads[g] = 1;
    }
#endif
#ifdef STEP_MODE
    *mj = base_mj[g] + (energy_reads[g] - 1) * STEP_MJ(g);
#else
    double elapsed = now_s() - epoch_s[g];
    if (update_s > 0.0) elapsed = floor(elapsed / update_s) * update_s;
    *mj = base_mj[g] + (unsigned long long)(elapsed * POWER_MW(g) + 0.5);
#endif
    return OK;
#endif
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned int *mw) {
    DEVICE_OR_FAIL(d, g);
    *mw = POWER_MW(g);
    return OK;
}

nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t d, int count, nvmlFieldValue_t *values) {
    DEVICE_OR_FAIL(d, g);
    for (int i = 0; i < count; i++) {
#ifndef NO_INSTANT
        if (values[i].fieldId == 186) {
            values[i].nvmlReturn = OK;
            values[i].valueType = 1; /* unsigned int */
            values[i].value.uiVal = POWER_MW(g) + 1000; /* instant differs from average */
            continue;
        }
#endif
        values[i].nvmlReturn = ERR_NOT_SUPPORTED;
    }
    return OK;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u) {
    DEVICE_OR_FAIL(d, g);
    u->gpu = 90 + g;
    u->memory = 40;
    return OK;
}

nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t d, int type, unsigned int *mhz) {
    DEVICE_OR_FAIL(d, g);
    *mhz = type == 1 ? 1980 : 1000; /* NVML_CLOCK_SM = 1 */
    return OK;
}

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, int sensor, unsigned int *c) {
    DEVICE_OR_FAIL(d, g);
    if (sensor != 0) return ERR_ARG;
    *c = 60 + g;
    return OK;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *m) {
    DEVICE_OR_FAIL(d, g);
    m->total = 80ull << 30;
    m->reserved = 0;
    m->used = (unsigned long long)(g + 1) << 30;
    m->free = m->total - m->used;
    return OK;
}
