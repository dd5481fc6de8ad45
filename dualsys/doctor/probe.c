/* dualsys doctor: cyclictest-style wake-up latency probe.
 *
 * usage: probe CORE HZ SECONDS PRIO [WORK_US [SPIN_US]]
 * Pins itself to CORE, asks for SCHED_FIFO at PRIO (0: stay on normal scheduling), locks its
 * memory, then sleeps to absolute CLOCK_MONOTONIC deadlines every 1/HZ s for SECONDS s and
 * records how late each wake-up was (1 us buckets up to 100 ms). Like cyclictest it does not
 * skip periods after a stall: each late tick is counted. Prints one JSON object on stdout.
 * WORK_US > 0 makes it a loop with work: after each wake-up it computes a fixed amount of
 * arithmetic calibrated at start to take WORK_US on this core (a tick's work, keeping the core as
 * busy as a real control loop does; a stall during it adds its whole length, as it does to a
 * real tick, where a clock-bounded busy wait would end with the stall), counts "work_misses", ticks whose work ended after the next deadline (the control
 * loop's own definition of a miss), and reports the work's p99 and max (wake-up to work done).
 * SPIN_US > 0 sleeps to SPIN_US before each deadline and busy-waits the rest, as dualsys's
 * control loop does; lateness is then measured after the spin.
 * SIGTERM or SIGINT ends the run early and still prints the result of the ticks measured so far:
 * a probe beside a run of unknown length is started long and stopped when the run ends.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define NBUCKETS 100000 /* 1 us buckets: 0 .. 99999 us; later values go to the last one */
#define WARMUP_TICKS 5  /* first ticks page in code and data; not recorded */

static uint32_t hist[NBUCKETS];
static uint32_t work_hist[NBUCKETS];
static volatile sig_atomic_t stop_now; /* set by SIGTERM / SIGINT */
static volatile uint64_t sink; /* keeps the work's arithmetic from being optimised away */

/* A fixed amount of work: n steps of a dependent integer recurrence. */
static void compute(uint64_t n) {
    uint64_t x = sink;
    for (uint64_t i = 0; i < n; i++) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    sink = x;
}

static void on_stop(int sig) {
    (void)sig;
    stop_now = 1;
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long pct_of(const uint32_t *h, uint64_t n, double p) {
    uint64_t want = (uint64_t)((double)n * p / 100.0 + 0.999999), seen = 0;
    if (want < 1) want = 1;
    for (long i = 0; i < NBUCKETS; i++) {
        seen += h[i];
        if (seen >= want) return i;
    }
    return NBUCKETS - 1;
}

static long pct(uint64_t n, double p) { return pct_of(hist, n, p); }

int main(int argc, char **argv) {
    if (argc < 5 || argc > 7) {
        fprintf(stderr, "usage: %s CORE HZ SECONDS PRIO [WORK_US [SPIN_US]]\n", argv[0]);
        return 2;
    }
    int core = atoi(argv[1]), hz = atoi(argv[2]), prio = atoi(argv[4]);
    double seconds = atof(argv[3]);
    int64_t work = argc >= 6 ? (int64_t)atol(argv[5]) * 1000 : 0;
    int64_t spin = argc >= 7 ? (int64_t)atol(argv[6]) * 1000 : 0;
    if (hz <= 0 || seconds <= 0 || work < 0 || spin < 0) {
        fprintf(stderr, "probe: HZ and SECONDS must be positive\n");
        return 2;
    }
    char pin_err[64] = "", fifo_err[64] = "", mlock_err[64] = "";
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(core, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) snprintf(pin_err, sizeof pin_err, "%s", strerror(errno));
    int fifo = 0;
    if (prio > 0) {
        struct sched_param sp = {.sched_priority = prio};
        if (sched_setscheduler(0, SCHED_FIFO, &sp) == 0) fifo = 1;
        else snprintf(fifo_err, sizeof fifo_err, "%s", strerror(errno));
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop; /* no SA_RESTART: the sleep returns EINTR and the loop ends */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int mlocked = mlockall(MCL_CURRENT | MCL_FUTURE) == 0;
    if (!mlocked) snprintf(mlock_err, sizeof mlock_err, "%s", strerror(errno));
    memset(hist, 0, sizeof hist); /* touch every page before measuring */
    memset(work_hist, 0, sizeof work_hist);
    /* calibration: steps per WORK_US, from the fastest of several timed runs (the fastest run
     * is the one no stall interrupted) */
    uint64_t work_steps = 0;
    if (work > 0) {
        const uint64_t trial = 200000;
        int64_t best = INT64_MAX;
        for (int r = 0; r < 9; r++) {
            int64_t t0 = now_ns();
            compute(trial);
            int64_t dt = now_ns() - t0;
            if (dt > 0 && dt < best) best = dt;
        }
        work_steps = (uint64_t)((double)work * (double)trial / (double)best + 0.5);
    }
    int64_t max_work = 0;

    const int64_t period = 1000000000LL / hz;
    const uint64_t n = (uint64_t)(seconds * hz + 0.5);
    uint64_t ticks = 0, misses = 0, late_half = 0, streak = 0, max_streak = 0;
    uint64_t work_misses = 0;
    int64_t max_late = 0;
    double sum_us = 0.0;
    int64_t next = now_ns() + period;
    int64_t t_start = 0;
    for (uint64_t i = 0; i < n + WARMUP_TICKS && !stop_now; i++) {
        int64_t wake_at = next - spin;
        struct timespec ts = {.tv_sec = wake_at / 1000000000LL, .tv_nsec = wake_at % 1000000000LL};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR && !stop_now) {
        }
        if (stop_now) break; /* the interrupted tick is not a measurement */
        int64_t woke = now_ns();
        while (woke < next) woke = now_ns(); /* the spin (none when SPIN_US is 0) */
        int64_t late = woke - next;
        if (work > 0) {
            compute(work_steps);
            int64_t done = now_ns();
            if (i >= WARMUP_TICKS) {
                if (done - next > period) work_misses++;
                long wus = (long)((done - woke) / 1000);
                work_hist[wus < NBUCKETS ? wus : NBUCKETS - 1]++;
                if (done - woke > max_work) max_work = done - woke;
            }
        }
        next += period;
        if (i < WARMUP_TICKS) {
            t_start = next - period;
            continue;
        }
        if (late < 0) late = 0;
        long us = (long)(late / 1000);
        hist[us < NBUCKETS ? us : NBUCKETS - 1]++;
        sum_us += (double)late / 1000.0;
        if (late > max_late) max_late = late;
        if (late > period / 2) late_half++;
        if (late > period) {
            misses++;
            if (++streak > max_streak) max_streak = streak;
        } else {
            streak = 0;
        }
        ticks++;
    }
    double wall = ticks ? (double)(now_ns() - t_start) / 1e9 : 0.0;
    printf("{\"probe\": \"c\", \"core\": %d, \"hz\": %d, \"ticks\": %llu, \"wall_s\": %.3f, "
           "\"fifo\": %s, \"fifo_error\": \"%s\", \"mlocked\": %s, \"mlock_error\": \"%s\", "
           "\"pin_error\": \"%s\", \"p50_us\": %ld, \"p99_us\": %ld, \"p999_us\": %ld, "
           "\"max_us\": %.1f, \"mean_us\": %.1f, \"misses\": %llu, \"late_half\": %llu, "
           "\"max_streak\": %llu, \"work_us\": %lld, \"spin_us\": %lld, "
           "\"work_misses\": %llu, \"work_p99_us\": %ld, \"work_max_us\": %.1f}\n",
           core, hz, (unsigned long long)ticks, wall, fifo ? "true" : "false", fifo_err,
           mlocked ? "true" : "false", mlock_err, pin_err, pct(ticks, 50), pct(ticks, 99),
           pct(ticks, 99.9), (double)max_late / 1000.0, ticks ? sum_us / ticks : 0.0,
           (unsigned long long)misses, (unsigned long long)late_half,
           (unsigned long long)max_streak, (long long)(work / 1000), (long long)(spin / 1000), (unsigned long long)work_misses,
           work > 0 ? pct_of(work_hist, ticks, 99) : 0L, (double)max_work / 1000.0);
    return 0;
}
