//! What the stock and invest gates share: reserving amounts from counters
//! for a holder (one script), releasing them (one script), and rebuilding a
//! counter from Postgres. One instance at a time builds a counter (a lock),
//! the others wait for it briefly, and it lives at most [`COUNTER_TTL`] so
//! that a drifted counter heals.
//!
//! The holder's mark says what the holder holds: `r` when its amounts were
//! taken, `b` when it went past the gate without them (the gate did not
//! know the item). Release reads the mark and turns it to `b` in the same
//! script, so what was taken is given back once, however often a release
//! is repeated, and a holder that only passed gives back nothing; the
//! mark lives on, so a retry of the key still goes to the store.
//!
//! Every amount taken is also a lease: a member `amount:mark` of the
//! counter's lease set (`<counter>:leases`, a sorted set scored by its
//! deadline, [`RESERVATION_LEASE`] after the reservation, on Redis' own
//! clock). The write confirms it after its commit (`confirm`: the member
//! goes, the amount stays taken) or releases it (the member goes and the
//! amount comes back). A lease nobody confirmed or released by its
//! deadline — its instance was killed, or lost Redis — is given back by the
//! next reservation on that counter, in the same script, before it counts
//! what is left. So a dead instance's reservations refuse nothing for
//! longer than the lease, where they used to until the counter expired
//! ([`COUNTER_TTL`]). Release gives back only an amount whose lease it
//! removed, so an amount is never given back twice. A write slower than
//! its lease has its amount given back early; the counter is then above
//! Postgres, the drift a gate may have (Postgres refuses the excess). A
//! rebuilt or forgotten counter drops its lease set with it: Postgres
//! never counted those amounts.
//!
//! Before the mark, the reservation reads the holder's key's refusal
//! record (`refusals.rs`), in the same script: a key whose gate refusal is
//! recorded, perhaps not yet in Postgres, is answered from that record and
//! never reaches the effect, even when stock came back since, the counter
//! is missing, or the holder's mark is still there. A holder that carries
//! the answers to its possible refusals (`domain::gate::RefusalAnswers`)
//! gets the one for the counter that is short recorded by the same script,
//! queued for Postgres as `refusals.rs` queues its own.
//!
//! On a Redis Cluster, one script can only take keys of one slot
//! (`slots.rs`): a counter and its own holder mark, tagged alike. There the
//! holder is marked per counter, the key's refusal record is read first
//! with a command of its own, and the counters are reserved one by one
//! ([`RESERVE_ONE`]); a counter that is short gives back what the earlier
//! ones took, so the holder still gets every amount or none. The refusal
//! is then recorded by its caller, as the other gates' are.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use super::RedisPool;
use deadpool_redis::redis::{Script, cmd};
use domain::error::Unavailable;
use domain::gate::{Admission, Holder};

use super::refusals::{Landing, RedisRefusals, record_key, unpack};
use super::{RedisKeys, RedisLock, slots, unavailable};
use crate::postgres::Postgres;

/// How long a counter lives before it is rebuilt from Postgres: bounds how
/// long a drifted counter can refuse what Postgres would accept.
pub const COUNTER_TTL: Duration = Duration::from_secs(30);

/// How long a reservation lasts unless its write confirms or releases it:
/// longer than a write takes when Postgres answers (the wait for a batch
/// lane is bounded by the dependency timeout, 2 s by default), and short
/// enough that a killed instance's reservations refuse nothing for long.
pub const RESERVATION_LEASE: Duration = Duration::from_secs(4);

/// How long a holder's mark lasts: longer than a write can wait for its
/// transaction, and than a client's quick retry takes.
pub const HOLDER_TTL: Duration = Duration::from_secs(60);

/// Gives back the counter `KEYS[c]`'s leases whose deadline passed
/// (`KEYS[l]` is its lease set; a member is `amount:mark`). Prepended to
/// the reservation scripts; `now_ms` is Redis' clock.
const RECLAIM: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function reclaim(counter, leases, now)
  local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, 256)
  for _, member in ipairs(expired) do
    redis.call('ZREM', leases, member)
    redis.call('INCRBY', counter, tonumber(string.match(member, '^(%d+):')))
  end
end
local function lease(counter, leases, now, ms, member)
  redis.call('ZADD', leases, now + ms, member)
  local ttl = redis.call('PTTL', counter)
  if ttl > 0 then redis.call('PEXPIRE', leases, ttl) end
end
";

/// KEYS: the counters, then the holder's mark, then the key's refusal
/// record, then each counter's lease set; ARGV: the amounts, then the
/// mark's lifetime in ms, the lease in ms, then optionally the record's
/// lifetime in ms and one packed record per counter (`refusals.rs`).
/// `{3, 0, 0, record}`: the key has a recorded refusal (nothing else is
/// looked at); `{2, 0, 0}`: the holder is marked already; `{-1, i, 0}`:
/// counter i is missing; `{0, i, left}`: counter i holds only `left`;
/// `{4, i, left}`: the same, and counter i's record is set under the key
/// (a record Redis cannot set, out of memory say, leaves a plain `0`);
/// `{1, 0, 0}`: every amount was taken, each under a lease, and the holder
/// marked `r`. Expired leases are given back before anything is counted.
/// Every answer has a fourth element, empty but for a record.
const RESERVE: &str = r"
local n = (#KEYS - 2) / 2
local record = redis.call('GET', KEYS[n + 2])
if record then return {3, 0, 0, record} end
if redis.call('EXISTS', KEYS[n + 1]) == 1 then return {2, 0, 0, ''} end
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 0 then return {-1, i, 0, ''} end
end
local now = now_ms()
for i = 1, n do reclaim(KEYS[i], KEYS[n + 2 + i], now) end
for i = 1, n do
  local left = tonumber(redis.call('GET', KEYS[i]))
  if left < tonumber(ARGV[i]) then
    if #ARGV > n + 3 then
      local set = redis.pcall('SET', KEYS[n + 2], ARGV[n + 3 + i], 'PX', ARGV[n + 3])
      if type(set) ~= 'table' or not set.err then return {4, i, left, ''} end
    end
    return {0, i, left, ''}
  end
end
for i = 1, n do
  redis.call('DECRBY', KEYS[i], ARGV[i])
  lease(KEYS[i], KEYS[n + 2 + i], now, tonumber(ARGV[n + 2]), ARGV[i] .. ':' .. KEYS[n + 1])
end
redis.call('SET', KEYS[n + 1], 'r', 'PX', ARGV[n + 1])
return {1, 0, 0, ''}";

/// KEYS: the holder's mark, then the counters, then their lease sets;
/// ARGV: the amounts. Gives back, once, what a mark of `r` took: only an
/// amount whose lease is still there (an expired one was given back by a
/// reservation already), only to a counter that still exists (a forgotten
/// one is rebuilt from Postgres, which never lost those units). The mark
/// stays, as `b` (holds nothing), for the rest of its life: a copy of the
/// request is still recognised and goes to the store, which answers it
/// from the key, rather than being refused by the gate while its first
/// copy, whose outcome its caller did not learn, may still commit.
const RELEASE: &str = r"
local held = redis.call('GET', KEYS[1])
if held ~= 'r' then return 0 end
redis.call('SET', KEYS[1], 'b', 'KEEPTTL')
local n = (#KEYS - 1) / 2
for i = 1, n do
  if redis.call('ZREM', KEYS[1 + n + i], ARGV[i] .. ':' .. KEYS[1]) == 1
    and redis.call('EXISTS', KEYS[1 + i]) == 1 then
    redis.call('INCRBY', KEYS[1 + i], ARGV[i])
  end
end
return 1";

/// KEYS: the holder's mark, then the lease sets; ARGV: the amounts. The
/// write committed: its leases go, its amounts stay taken, and its mark
/// stays so that a copy of the request is still recognised.
const CONFIRM: &str = r"
for i = 2, #KEYS do redis.call('ZREM', KEYS[i], ARGV[i - 1] .. ':' .. KEYS[1]) end
return 1";

/// On a cluster, one counter at a time. KEYS: the counter, then the
/// holder's mark on it, then its lease set; ARGV: the amount, the mark's
/// lifetime in ms, the lease in ms.
/// `{2, 0}`: marked already; `{-1, 0}`: the counter is missing;
/// `{0, left}`: it holds only `left`; `{1, 0}`: taken under a lease and
/// marked `r`.
const RESERVE_ONE: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return {2, 0} end
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
local now = now_ms()
reclaim(KEYS[1], KEYS[3], now)
local left = tonumber(redis.call('GET', KEYS[1]))
if left < tonumber(ARGV[1]) then return {0, left} end
redis.call('DECRBY', KEYS[1], ARGV[1])
lease(KEYS[1], KEYS[3], now, tonumber(ARGV[3]), ARGV[1] .. ':' .. KEYS[2])
redis.call('SET', KEYS[2], 'r', 'PX', ARGV[2])
return {1, 0}";

/// KEYS: a counter, then its lease set; ARGV: the value, its lifetime in
/// s. A counter built from Postgres starts without leases: Postgres never
/// counted the amounts they hold.
const BUILD: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then redis.call('DEL', KEYS[2]) end
return 1";

static RESERVE_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{RECLAIM}{RESERVE}")));
static RESERVE_ONE_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{RECLAIM}{RESERVE_ONE}")));
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));
static CONFIRM_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(CONFIRM));
static BUILD_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(BUILD));

/// The lease set of a counter: tagged as the counter is (same slot).
pub(crate) fn leases_of(counter: &str) -> String {
    format!("{counter}:leases")
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A counter that was too low: which one (its index in the request) and
/// what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Short {
    pub index: usize,
    pub left: i64,
}

/// What became of a cluster refusal the holder carries the answer to.
enum Recorded {
    /// Recorded and queued: answered once it lands.
    Queued(Landing),
    /// Not recorded here: the admission to answer.
    Not(Admission<Short>),
}

/// The answer to a refusal recorded under the holder's key: `Answered`
/// once its batch has landed, or `Recorded` when Postgres had another
/// record of the key (a paid order whose mark lapsed, say), which answers.
/// Without a landing (nothing was queued), `Answered` at once.
///
/// # Errors
/// [`Unavailable`] when the batch failed or did not land in time.
async fn once_landed(
    landing: Option<Landing>,
    short: Short,
) -> Result<Admission<Short>, Unavailable> {
    let other = match landing {
        Some(landing) => landing.landed().await?,
        None => None,
    };
    Ok(match other {
        Some(record) => Admission::Recorded(record),
        None => Admission::Answered(short),
    })
}

/// What a rebuild found.
pub(crate) enum Rebuilt {
    /// The counter exists now.
    Ready,
    /// Postgres has no such row.
    Unknown,
    /// Another instance is rebuilding it and did not finish in time.
    Busy,
}

/// What a counter gate runs on: Redis for the counters, Postgres to rebuild
/// them from, and a lock so that one instance rebuilds at a time.
#[derive(Clone)]
pub(crate) struct Counters {
    pool: RedisPool,
    keys: RedisKeys,
    lock: RedisLock,
    pg: Postgres,
    /// Where a refusal the reservation script records is queued for
    /// Postgres; without it, a holder's answers are not recorded.
    refusals: Option<RedisRefusals>,
    /// How long a reservation lasts unconfirmed.
    lease: Duration,
}

impl Counters {
    pub(crate) fn new(pool: RedisPool, keys: RedisKeys, pg: Postgres) -> Self {
        let lock = RedisLock::new(pool.clone(), keys.clone());
        Self {
            pool,
            keys,
            lock,
            pg,
            refusals: None,
            lease: RESERVATION_LEASE,
        }
    }

    /// The same counters with reservations that last `lease` unconfirmed.
    pub(crate) fn leasing_for(self, lease: Duration) -> Self {
        Self { lease, ..self }
    }

    /// The same counters, recording the refusal answers a holder carries
    /// in the reservation's script and queueing them on `refusals`.
    pub(crate) fn recording_on(self, refusals: RedisRefusals) -> Self {
        Self {
            refusals: Some(refusals),
            ..self
        }
    }

    /// The key namespace.
    pub(crate) fn keys(&self) -> &RedisKeys {
        &self.keys
    }

    pub(crate) fn prefix(&self) -> &str {
        self.keys.prefix()
    }

    pub(crate) fn pg(&self) -> &Postgres {
        &self.pg
    }

    /// A pooled Redis connection.
    pub(crate) async fn connection(&self) -> Result<super::RedisConnection, Unavailable> {
        self.pool.get().await.map_err(unavailable)
    }

    pub(crate) async fn exists(&self, key: &str) -> Result<bool, Unavailable> {
        let mut conn = self.connection().await?;
        cmd("EXISTS")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    /// The key of `holder`'s mark at the gate named `gate`: on one server
    /// one for the holder, on a cluster one per `counter`.
    fn marker(&self, gate: &str, holder: Holder<'_>, counter: &str) -> String {
        let key = holder.key.map_or("", |k| k.as_str());
        let per_counter = self.pool.is_cluster().then_some(counter);
        slots::holder(&self.keys, gate, per_counter, holder.user_id, key)
    }

    /// The key of the holder's refusal record (a holder without a key has
    /// an empty one, which no record has).
    fn record(&self, holder: Holder<'_>) -> String {
        record_key(
            &self.keys,
            holder.user_id,
            holder.key.map_or("", |k| k.as_str()),
        )
    }

    /// Takes every amount from its counter for the holder (marked at the
    /// gate named `gate`), or nothing; a missing counter is rebuilt with
    /// `rebuild(index)` and the reservation tried again. With a counter it
    /// cannot build, the holder is only marked and passes
    /// ([`Admission::Bypass`]). A holder whose key has a recorded refusal
    /// is answered from it first ([`Admission::Recorded`]).
    pub(crate) async fn reserve<F, Fut>(
        &self,
        holder: Holder<'_>,
        gate: &str,
        amounts: &[(String, i64)],
        rebuild: F,
    ) -> Result<Admission<Short>, Unavailable>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Result<Rebuilt, Unavailable>>,
    {
        let Some((first, _)) = amounts.first() else {
            return Ok(Admission::Reserved);
        };
        if self.pool.is_cluster() {
            return self
                .reserve_one_by_one(holder, gate, amounts, rebuild)
                .await;
        }
        let marker = &self.marker(gate, holder, first);
        let ttl_ms = millis(HOLDER_TTL);
        let record = self.record(holder);
        // The answers the holder carries, when there is one per counter.
        let mut recording = match (&self.refusals, holder.key, holder.answers) {
            (Some(refusals), Some(key), Some(answers))
                if answers.responses.len() == amounts.len() =>
            {
                refusals.recording(holder.user_id, key, answers)
            }
            _ => None,
        };
        // A few rounds at most: each round rebuilds one missing counter.
        for _ in 0..=amounts.len() {
            let mut conn = self.connection().await?;
            let mut script = RESERVE_SCRIPT.prepare_invoke();
            for (key, _) in amounts {
                script.key(key);
            }
            script.key(marker);
            script.key(&record);
            for (key, _) in amounts {
                script.key(leases_of(key));
            }
            for (_, amount) in amounts {
                script.arg(*amount);
            }
            script.arg(ttl_ms);
            script.arg(millis(self.lease));
            if let Some(recording) = &recording {
                script.arg(recording.ttl_ms);
                for packed in &recording.packed {
                    script.arg(packed);
                }
            }
            let (status, position, left, recorded): (i64, usize, i64, Vec<u8>) =
                script.invoke_async(&mut conn).await.map_err(unavailable)?;
            drop(conn);
            let index = position.checked_sub(1).filter(|i| *i < amounts.len());
            match (status, index) {
                (3, _) => return Ok(Admission::Recorded(unpack(&recorded)?)),
                (1, _) => return Ok(Admission::Reserved),
                (2, _) => return Ok(Admission::Repeated),
                (0, Some(index)) => return Ok(Admission::Refused(Short { index, left })),
                (4, Some(index)) => {
                    let landing = recording.take().and_then(|r| r.recorded(index));
                    return once_landed(landing, Short { index, left }).await;
                }
                (-1, Some(index)) => match rebuild(index).await? {
                    Rebuilt::Ready => {}
                    Rebuilt::Unknown | Rebuilt::Busy => return self.pass(marker).await,
                },
                _ => return self.pass(marker).await,
            }
        }
        self.pass(marker).await
    }

    /// [`reserve`](Self::reserve) on a cluster: the key's refusal record,
    /// then each counter in its own script. When one is short, the refusal
    /// is recorded under the key (when the holder carries its answers)
    /// before anything is given back, so a copy of the request that comes
    /// meanwhile is answered from the record; then, whatever the outcome
    /// (short, a copy in flight, a counter that cannot be built, a failure),
    /// what the earlier counters took is given back.
    async fn reserve_one_by_one<F, Fut>(
        &self,
        holder: Holder<'_>,
        gate: &str,
        amounts: &[(String, i64)],
        rebuild: F,
    ) -> Result<Admission<Short>, Unavailable>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Result<Rebuilt, Unavailable>>,
    {
        let record = self.record(holder);
        let recorded: Option<Vec<u8>> = {
            let mut conn = self.connection().await?;
            cmd("GET")
                .arg(&record)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?
        };
        if let Some(recorded) = recorded {
            return Ok(Admission::Recorded(unpack(&recorded)?));
        }
        let mut taken = 0;
        let mut outcome = self
            .take_each(holder, gate, amounts, &rebuild, &mut taken)
            .await;
        let mut landing = None;
        if let Ok(Admission::Refused(short)) = outcome {
            outcome = match self.record_refusal(holder, &record, short).await {
                Ok(Recorded::Queued(queued)) => {
                    landing = Some(queued);
                    Ok(Admission::Answered(short))
                }
                Ok(Recorded::Not(admission)) => Ok(admission),
                Err(err) => Err(err),
            };
        }
        if matches!(outcome, Ok(Admission::Reserved)) {
            return outcome;
        }
        // Every amount or none: give back what this call took, before any
        // wait for the refusal's batch.
        let given_back = self.release(holder, gate, &amounts[..taken]).await;
        match outcome? {
            Admission::Bypass => {
                given_back?;
                let (first, _) = &amounts[0];
                self.pass(&self.marker(gate, holder, first)).await
            }
            Admission::Answered(short) => once_landed(landing, short).await,
            other => Ok(other),
        }
    }

    /// Takes each counter's amount in turn, counting in `taken` how many it
    /// took; stops at the first that is short, marked already (a copy in
    /// flight), missing after a rebuild, or failing.
    async fn take_each<F, Fut>(
        &self,
        holder: Holder<'_>,
        gate: &str,
        amounts: &[(String, i64)],
        rebuild: &F,
        taken: &mut usize,
    ) -> Result<Admission<Short>, Unavailable>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Result<Rebuilt, Unavailable>>,
    {
        let ttl_ms = millis(HOLDER_TTL);
        for (index, (counter, amount)) in amounts.iter().enumerate() {
            let marker = self.marker(gate, holder, counter);
            let mut rebuilt = false;
            loop {
                let mut conn = self.connection().await?;
                let (status, left): (i64, i64) = RESERVE_ONE_SCRIPT
                    .key(counter)
                    .key(&marker)
                    .key(leases_of(counter))
                    .arg(*amount)
                    .arg(ttl_ms)
                    .arg(millis(self.lease))
                    .invoke_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                drop(conn);
                match status {
                    1 => {
                        *taken = index + 1;
                        break;
                    }
                    2 => return Ok(Admission::Repeated),
                    0 => return Ok(Admission::Refused(Short { index, left })),
                    // Missing: rebuilt once; missing again, or not buildable: pass.
                    _ if rebuilt => return Ok(Admission::Bypass),
                    _ => match rebuild(index).await? {
                        Rebuilt::Ready => rebuilt = true,
                        Rebuilt::Unknown | Rebuilt::Busy => return Ok(Admission::Bypass),
                    },
                }
            }
        }
        Ok(Admission::Reserved)
    }

    /// Records a cluster refusal under the holder's key when the holder
    /// carries its answers and a queue place is free: its landing, or the
    /// record a copy of the request set first. Otherwise the plain
    /// refusal, which its caller records.
    async fn record_refusal(
        &self,
        holder: Holder<'_>,
        record: &str,
        short: Short,
    ) -> Result<Recorded, Unavailable> {
        let recording = match (&self.refusals, holder.key, holder.answers) {
            (Some(refusals), Some(key), Some(answers)) => {
                refusals.recording(holder.user_id, key, answers)
            }
            _ => None,
        };
        let Some(recording) = recording else {
            return Ok(Recorded::Not(Admission::Refused(short)));
        };
        if short.index >= recording.packed.len() {
            return Ok(Recorded::Not(Admission::Refused(short)));
        }
        let mut conn = self.connection().await?;
        Ok(
            match recording.record(&mut conn, record, short.index).await? {
                Ok(landing) => Recorded::Queued(landing),
                // A copy of the request recorded first: its record answers.
                Err(existing) => Recorded::Not(Admission::Recorded(existing)),
            },
        )
    }

    /// Marks a holder that goes past the gate without a reservation, so that
    /// its copies are recognised while it is in flight.
    async fn pass(&self, marker: &str) -> Result<Admission<Short>, Unavailable> {
        let mut conn = self.connection().await?;
        let set: Option<String> = cmd("SET")
            .arg(marker)
            .arg("b")
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(HOLDER_TTL.as_millis()).unwrap_or(u64::MAX))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(if set.is_some() {
            Admission::Bypass
        } else {
            Admission::Repeated
        })
    }

    /// Gives back what the holder's reservation took, once, and drops its
    /// mark (on a cluster, counter by counter, each with its own mark).
    pub(crate) async fn release(
        &self,
        holder: Holder<'_>,
        gate: &str,
        amounts: &[(String, i64)],
    ) -> Result<(), Unavailable> {
        self.settle(&RELEASE_SCRIPT, true, holder, gate, amounts)
            .await
    }

    /// The holder's write committed: its leases go and its amounts stay
    /// taken. Its mark stays, so a copy of the request is still
    /// recognised. A confirmation that does not reach Redis only lets the
    /// leases expire: their amounts come back, and the counter is above
    /// Postgres until it is rebuilt (the drift Postgres absorbs).
    pub(crate) async fn confirm(
        &self,
        holder: Holder<'_>,
        gate: &str,
        amounts: &[(String, i64)],
    ) -> Result<(), Unavailable> {
        self.settle(&CONFIRM_SCRIPT, false, holder, gate, amounts)
            .await
    }

    /// Runs `script` (release or confirm) on the holder's mark, then,
    /// with `counters`, on the counters, then on their lease sets, with
    /// the amounts as arguments: once on one server, once per counter on
    /// a cluster (each counter has its own mark there).
    async fn settle(
        &self,
        script: &Script,
        counters: bool,
        holder: Holder<'_>,
        gate: &str,
        amounts: &[(String, i64)],
    ) -> Result<(), Unavailable> {
        let Some((first, _)) = amounts.first() else {
            return Ok(());
        };
        let groups: Vec<(String, &[(String, i64)])> = if self.pool.is_cluster() {
            amounts
                .iter()
                .enumerate()
                .map(|(i, (counter, _))| (self.marker(gate, holder, counter), &amounts[i..=i]))
                .collect()
        } else {
            vec![(self.marker(gate, holder, first), amounts)]
        };
        // Each group is tried, whatever an earlier one did; the first
        // failure is reported.
        let mut first_failure = None;
        for (marker, amounts) in groups {
            let settled = async {
                let mut conn = self.connection().await?;
                let mut invocation = script.prepare_invoke();
                invocation.key(&marker);
                if counters {
                    for (key, _) in amounts {
                        invocation.key(key);
                    }
                }
                for (key, amount) in amounts {
                    invocation.key(leases_of(key));
                    invocation.arg(*amount);
                }
                let _: i64 = invocation
                    .invoke_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                Ok::<(), Unavailable>(())
            }
            .await;
            if let Err(err) = settled {
                first_failure.get_or_insert(err);
            }
        }
        first_failure.map_or(Ok(()), Err)
    }

    /// Drops the counter and its leases: the next use rebuilds it from
    /// Postgres.
    pub(crate) async fn forget(&self, key: &str) -> Result<(), Unavailable> {
        let mut conn = self.connection().await?;
        let _: i64 = cmd("DEL")
            .arg(key)
            .arg(leases_of(key))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Sets `key` to what `load` reads from Postgres, under the lock
    /// `lock_name`. Requests that arrive meanwhile poll for the counter (up
    /// to 2 s) rather than fall through to Postgres: the first burst of a
    /// sale is when the gate matters.
    pub(crate) async fn rebuild<F, Fut>(
        &self,
        key: &str,
        lock_name: &str,
        load: F,
    ) -> Result<Rebuilt, Unavailable>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<i64>, Unavailable>>,
    {
        let Some(lease) = self
            .lock
            .try_acquire(lock_name, Duration::from_secs(5))
            .await?
        else {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while tokio::time::Instant::now() < deadline {
                if self.exists(key).await? {
                    return Ok(Rebuilt::Ready);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            return Ok(Rebuilt::Busy);
        };
        if self.exists(key).await? {
            let _ = lease.release().await;
            return Ok(Rebuilt::Ready);
        }
        let result = match load().await {
            Ok(Some(value)) => self.set(key, value).await.map(|()| Rebuilt::Ready),
            Ok(None) => Ok(Rebuilt::Unknown),
            Err(e) => Err(e),
        };
        let _ = lease.release().await;
        result
    }

    /// Sets a counter that does not exist, without leases.
    async fn set(&self, key: &str, value: i64) -> Result<(), Unavailable> {
        let mut conn = self.connection().await?;
        let _: i64 = BUILD_SCRIPT
            .key(key)
            .key(leases_of(key))
            .arg(value)
            .arg(COUNTER_TTL.as_secs())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
