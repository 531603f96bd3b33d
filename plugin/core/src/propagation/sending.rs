//! Sending records: a round's copies to elected nodes, recorded on this node's bundle
//! (`keys::SENDING_PREFIX`) as soon as the job has elected them and removed when they
//! have ended. A reader on the target that probes this node before the copy's
//! announcement has landed there (it lands after a connection and a round trip over the
//! route; a fresh consumer reads well before that) learns from them that the state is on
//! its way, and waits for it instead of pulling the same bytes over the same links
//! (`fetch`, issue 13).

use crate::cluster::Cluster;
use crate::script::Script;
use crate::skylog;
use crate::store::Request;

/// KEYS: bundle. ARGV: field, value, field, value... Sets the fields only on a bundle
/// that exists, so that a record never recreates a bundle deleted meanwhile (it would
/// have no TTL). (`PTTL` answers -2 for a missing key; the documented node user may not
/// call `EXISTS`.)
pub const RECORD: &str = r#"
if redis.call('PTTL', KEYS[1]) ~= -2 then
  redis.call('HSET', KEYS[1], unpack(ARGV))
end
return 0
"#;

static RECORD_SCRIPT: Script = Script::new(RECORD);

/// Writes `records` ((field, unix ms the copy is expected by)) to the local bundle `key`.
/// A failure costs only readers' knowledge of the copies (logged).
pub(super) async fn record(ctx: &Cluster, key: &str, job: &str, records: &[(String, u64)]) {
    if records.is_empty() {
        return;
    }
    let mut cmd = RECORD_SCRIPT.cmd();
    cmd.arg(1).arg(key);
    for (field, until) in records {
        cmd.arg(field).arg(until);
    }
    if let Err(e) = ctx.local.query_async(&Request::Cmd(cmd)).await {
        skylog!(Info, "job {job}: recording its copies as on their way: {e}");
    }
}

/// Removes the records of a round whose copies have ended (made or failed).
pub(super) async fn clear(ctx: &Cluster, key: &str, job: &str, records: &[(String, u64)]) {
    if records.is_empty() {
        return;
    }
    let mut cmd = redis::cmd("HDEL");
    cmd.arg(key);
    for (field, _) in records {
        cmd.arg(field);
    }
    if let Err(e) = ctx.local.query_async(&Request::Cmd(cmd)).await {
        skylog!(Info, "job {job}: removing its sending records: {e}");
    }
}
