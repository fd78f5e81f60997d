//! The one way rein's programs update a per-CPU map value in place.

use aya_ebpf::maps::PerCpuHashMap;

/// Applies `f` to this CPU's value of `key`, creating it from the default first.
#[inline(always)]
pub fn update<V: Copy + Default>(map: &PerCpuHashMap<u64, V>, key: u64, f: impl FnOnce(&mut V)) {
    if let Some(v) = map.get_ptr_mut(&key) {
        // SAFETY: per-CPU value, written only by this CPU during this program run.
        f(unsafe { &mut *v });
        return;
    }
    let mut first = V::default();
    f(&mut first);
    let _ = map.insert(&key, &first, 0);
}
