//! `stats-dump` / `stats-restore`: timings and page counters (a service
//! image: it starts with the service magic).

use crate::proto::message;

message! {
    /// Times are in microseconds.
    pub struct DumpStatsEntry ("dump_stats_entry") {
        1 freezing_time: required uint32,
        2 frozen_time: required uint32,
        3 memdump_time: required uint32,
        4 memwrite_time: required uint32,
        5 pages_scanned: required uint64,
        6 pages_skipped_parent: required uint64,
        7 pages_written: required uint64,
        8 irmap_resolve: optional uint32,
        9 pages_lazy: required uint64,
        10 page_pipes: optional uint64,
        11 page_pipe_bufs: optional uint64,
        12 shpages_scanned: optional uint64,
        13 shpages_skipped_parent: optional uint64,
        14 shpages_written: optional uint64,
    }
}

message! {
    pub struct RestoreStatsEntry ("restore_stats_entry") {
        1 pages_compared: required uint64,
        2 pages_skipped_cow: required uint64,
        3 forking_time: required uint32,
        4 restore_time: required uint32,
        5 pages_restored: optional uint64,
    }
}

message! {
    /// One of the two, depending on the file.
    pub struct StatsEntry ("stats_entry") {
        1 dump: optional message<DumpStatsEntry>,
        2 restore: optional message<RestoreStatsEntry>,
    }
}
