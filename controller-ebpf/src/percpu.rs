//! The one way rein's programs update a per-CPU map value in place.

use aya_ebpf::maps::PerCpuHashMap;

/// A zeroed `V`, written one `u64` at a time with volatile stores. A plain `V::default()` of
/// a large value (a histogram is 136 bytes) compiles to a call to `memset`, which the BPF
/// target runs as a byte loop: hundreds of instructions per call, multiplied by every path
/// the verifier explores.
#[inline(always)]
fn zeroed<V: Copy>() -> V {
    let mut v = core::mem::MaybeUninit::<V>::uninit();
    let words = v.as_mut_ptr().cast::<u64>();
    let mut i = 0;
    while i < core::mem::size_of::<V>() / 8 {
        // SAFETY: `i` stays within the value (its size is a multiple of 8 for every map
        // value type, each `#[repr(C)]` of `u64`s); volatile keeps it from becoming memset.
        unsafe { words.add(i).write_volatile(0) };
        i += 1;
    }
    // SAFETY: every byte was written (the value types are made of whole u64s, all-zero is a
    // valid value of each).
    unsafe { v.assume_init() }
}

/// Applies `f` to this CPU's value of `key`, creating it (all zero) first.
#[inline(always)]
pub fn update<V: Copy>(map: &PerCpuHashMap<u64, V>, key: u64, f: impl FnOnce(&mut V)) {
    if let Some(v) = map.get_ptr_mut(&key) {
        // SAFETY: per-CPU value, written only by this CPU during this program run.
        f(unsafe { &mut *v });
        return;
    }
    let mut first: V = zeroed();
    f(&mut first);
    let _ = map.insert(&key, &first, 0);
}

/// One `u64` per CPU that [`opaque`] passes values through.
#[aya_ebpf::macros::map]
static REIN_OPAQUE: aya_ebpf::maps::PerCpuArray<u64> =
    aya_ebpf::maps::PerCpuArray::with_max_entries(1, 0);

/// `x`, as the verifier sees a number read from a map: unknown. A histogram bucket worked
/// out with branches takes one of sixteen known values, and the verifier would check all
/// that follows once per value (for every level of a chain: thousands of paths); passed
/// through a map it is one unknown number, checked once. Falls back to `x` itself.
#[inline(always)]
pub fn opaque(x: u64) -> u64 {
    let Some(slot) = REIN_OPAQUE.get_ptr_mut(0) else {
        return x;
    };
    // SAFETY: this CPU's slot, written and read back within this program run.
    unsafe {
        slot.write_volatile(x);
        slot.read_volatile()
    }
}

/// Counts one sample of `ns` in a log2 histogram (see `DelayHistogram`), with the bucket
/// passed through [`opaque`].
#[inline(always)]
pub fn record(h: &mut controller_common::DelayHistogram, bucket: u64, ns: u64) {
    if let Some(slot) = h.buckets.get_mut(bucket as usize) {
        *slot += 1;
    }
    h.sum_ns += ns;
}
