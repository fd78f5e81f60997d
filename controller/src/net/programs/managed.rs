//! Which cgroups the programs act for: the managed set, the generation that invalidates the
//! programs' cached chains, and forgetting a removed cgroup's entries.

use super::*;

impl Datapath {
    /// Every cgroup id some per-cgroup map has an entry for (managed, limits, clocks,
    /// counters, histograms): what the agent checks against the live cgroups.
    pub fn keyed_ids(&mut self) -> Result<Vec<u64>, ProgramError> {
        let mut ids = self.managed()?;
        let managed = ids.len();
        let shaped = self.shaped()?;
        let traffic = self.traffic()?;
        // Counted on this walk (every second), so a scrape reads them for free.
        self.fill = vec![
            MapFill {
                map: MANAGED_MAP,
                entries: managed,
                capacity: controller_common::MANAGED_MAP_MAX_ENTRIES,
            },
            MapFill {
                map: SHAPER_MAP,
                entries: shaped.len(),
                capacity: controller_common::SHAPER_MAP_MAX_ENTRIES,
            },
            MapFill {
                map: TRAFFIC_MAP,
                entries: traffic.len(),
                capacity: controller_common::TRAFFIC_MAP_MAX_ENTRIES,
            },
        ];
        ids.extend(shaped.into_iter().map(|(id, _)| id));
        ids.extend(traffic.into_iter().map(|(id, _)| id));
        for name in [SHAPER_STATE_MAP, POLICER_STATE_MAP] {
            ids.extend(self.keys::<ShaperState>(name)?);
        }
        ids.extend(self.keys::<PolicerConfig>(POLICER_MAP)?);
        ids.extend(self.keys::<FlowPeak>(FLOW_PEAK_MAP)?);
        for name in [DELAY_MAP, RUNQ_MAP] {
            ids.extend(self.per_cpu_keys::<DelayHistogram>(name)?);
        }
        ids.extend(self.per_cpu_keys::<TcpStats>(TCP_MAP)?);
        Ok(ids)
    }

    /// How full the per-cgroup maps were at the last [`Datapath::keyed_ids`] (the agent
    /// walks them every second); empty before the first walk.
    pub fn fill(&self) -> &[MapFill] {
        &self.fill
    }

    fn keys<V: aya::Pod>(&mut self, name: &'static str) -> Result<Vec<u64>, ProgramError> {
        let err = |source| ProgramError::Map { name, source };
        let map = HashMap::<_, u64, V>::try_from(self.map_mut(name)?).map_err(err)?;
        map.keys().map(|k| k.map_err(err)).collect()
    }

    fn per_cpu_keys<V: aya::Pod>(&self, name: &'static str) -> Result<Vec<u64>, ProgramError> {
        let err = |source| ProgramError::Map { name, source };
        self.per_cpu_map::<V>(name)?
            .keys()
            .map(|k| k.map_err(err))
            .collect()
    }

    /// Makes `cgroup_id` a managed cgroup: the programs charge and count the packets and
    /// tasks of its whole subtree to it (and to the managed cgroups above it) from now on.
    /// Also bumps a generation an earlier change failed to bump, so the agent's periodic
    /// repair, which calls this for every live cgroup, settles it.
    pub fn manage(&mut self, cgroup_id: u64) -> Result<(), ProgramError> {
        let new = self.entry::<u8>(MANAGED_MAP, cgroup_id)?.is_none();
        if new {
            self.set_entry(MANAGED_MAP, cgroup_id, 1u8)?;
        }
        if new || self.bump_pending {
            self.bump_generation()?;
        }
        Ok(())
    }

    /// Bumps the generation if an earlier bump failed; true when it did.
    pub fn settle_generation(&mut self) -> Result<bool, ProgramError> {
        if !self.bump_pending {
            return Ok(false);
        }
        self.bump_generation()?;
        Ok(true)
    }

    /// The managed cgroups, by id.
    pub fn managed(&mut self) -> Result<Vec<u64>, ProgramError> {
        self.keys::<u8>(MANAGED_MAP)
    }

    /// Invalidates every chain the programs cached: call after each change of the managed
    /// set, once it is complete.
    fn bump_generation(&mut self) -> Result<(), ProgramError> {
        let err = |source| ProgramError::Map {
            name: GENERATION_MAP,
            source,
        };
        self.bump_pending = true;
        let mut map =
            aya::maps::Array::<_, u64>::try_from(self.map_mut(GENERATION_MAP)?).map_err(err)?;
        let next = map.get(&0, 0).map_err(err)?.wrapping_add(1);
        map.set(0, &next, 0).map_err(err)?;
        self.bump_pending = false;
        Ok(())
    }

    /// Forgets a removed cgroup: no longer managed, and its shaping, pacing clock, counters
    /// and histograms gone.
    pub fn forget(&mut self, cgroup_id: u64) -> Result<(), ProgramError> {
        let removed = HashMap::<_, u64, u8>::try_from(self.map_mut(MANAGED_MAP)?)
            .and_then(|mut m| m.remove(&cgroup_id));
        absent_ok(removed, MANAGED_MAP)?;
        self.bump_generation()?;
        self.clear_shaping(cgroup_id)?;
        self.clear_policing(cgroup_id)?;
        self.remove_per_cpu_entry::<DelayHistogram>(RUNQ_MAP, cgroup_id)?;
        self.remove_per_cpu_entry::<TcpStats>(TCP_MAP, cgroup_id)?;
        self.remove_per_cpu_entry::<Traffic>(TRAFFIC_MAP, cgroup_id)?;
        self.remove_per_cpu_entry::<DelayHistogram>(DELAY_MAP, cgroup_id)
    }
}
