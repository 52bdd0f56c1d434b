//! Live workflow state of every case (办件): its encoded snapshot, state and version, look-up indexes
//! by unit and buyer, and per-batch counts by state. Production keeps it in Redis; the sandbox in
//! memory. It is a fast mirror, never the record: every write carries the case's version from
//! PostgreSQL and is applied atomically only if newer, and the whole state can be rebuilt from
//! PostgreSQL at any time.
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use redis::{AsyncCommands, Script, aio::ConnectionManager};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("workflow store (Redis) error (办件状态存储错误): {0}")]
    Redis(#[from] redis::RedisError),
}

/// One case as mirrored: enough to answer look-ups without touching PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseSnapshot {
    pub case_id: String,
    pub batch_id: String,
    pub unit_code: String,
    /// Resident id numbers of the buyers; only their digests are stored.
    pub buyer_ids: Vec<String>,
    pub version: i64,
    pub state: String,
    /// The encoded `Case` reply.
    pub payload: Vec<u8>,
}

/// The workflow store. Cheap to clone.
#[derive(Clone)]
pub enum Workflow {
    Redis(RedisWorkflow),
    Memory(MemoryWorkflow),
}

/// Buyer ids never appear in keys in clear: a digest is enough to find a case by buyer.
fn buyer_key(resident_id: &str) -> String {
    hex::encode(&Sha256::digest(resident_id.as_bytes())[..16])
}

impl Workflow {
    /// Connects to Redis; `prefix` namespaces every key (one per deployment or test).
    pub async fn redis(url: &str, prefix: &str) -> Result<Self, WorkflowError> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new(client).await?;
        Ok(Workflow::Redis(RedisWorkflow {
            conn,
            prefix: prefix.to_owned(),
            put: Arc::new(Script::new(PUT_CASE_LUA)),
            find: Arc::new(Script::new(FIND_LUA)),
        }))
    }

    pub fn memory() -> Self {
        Workflow::Memory(MemoryWorkflow::default())
    }

    /// Stores `case` if its version is newer than the stored one, moving the batch's counts from
    /// the old state to the new one atomically. Returns whether it was applied.
    pub async fn put_case(&self, case: &CaseSnapshot) -> Result<bool, WorkflowError> {
        match self {
            Workflow::Redis(r) => r.put_case(case).await,
            Workflow::Memory(m) => Ok(m.put_case(case)),
        }
    }

    /// Stores many cases in one round trip (a pipeline of the same atomic script). Returns how many
    /// were applied.
    pub async fn put_cases(&self, cases: &[CaseSnapshot]) -> Result<usize, WorkflowError> {
        match self {
            Workflow::Redis(r) => r.put_cases(cases).await,
            Workflow::Memory(m) => Ok(cases.iter().filter(|c| m.put_case(c)).count()),
        }
    }

    /// Encoded `Case` replies for these ids, `None` where the store lacks one.
    pub async fn get_cases(
        &self,
        case_ids: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, WorkflowError> {
        match self {
            Workflow::Redis(r) => r.get_cases(case_ids).await,
            Workflow::Memory(m) => Ok(m.get_cases(case_ids)),
        }
    }

    /// The cases of a unit with their encoded replies (see [`Found`]).
    pub async fn cases_by_unit(&self, unit_code: &str) -> Result<Found, WorkflowError> {
        self.find(&format!("unit:{unit_code}")).await
    }

    /// The cases of a buyer with their encoded replies (see [`Found`]).
    pub async fn cases_by_buyer(&self, resident_id: &str) -> Result<Found, WorkflowError> {
        self.find(&format!("buyer:{}", buyer_key(resident_id)))
            .await
    }

    async fn find(&self, index: &str) -> Result<Found, WorkflowError> {
        match self {
            Workflow::Redis(r) => r.find(index).await,
            Workflow::Memory(m) => {
                let ids = m.index(index);
                let replies = m.get_cases(&ids);
                Ok(ids.into_iter().zip(replies).collect())
            }
        }
    }

    /// Case counts of a batch by state name.
    pub async fn batch_counts(
        &self,
        batch_id: &str,
    ) -> Result<HashMap<String, i64>, WorkflowError> {
        match self {
            Workflow::Redis(r) => {
                let mut conn = r.conn.clone();
                let counts: HashMap<String, i64> = conn
                    .hgetall(format!("{}batch:{batch_id}:counts", r.prefix))
                    .await?;
                Ok(counts)
            }
            Workflow::Memory(m) => Ok(m.counts(batch_id)),
        }
    }

    /// Forgets everything under this store's prefix, before a rebuild from PostgreSQL.
    pub async fn clear(&self) -> Result<(), WorkflowError> {
        match self {
            Workflow::Redis(r) => r.clear().await,
            Workflow::Memory(m) => {
                m.clear();
                Ok(())
            }
        }
    }
}

/// Case ids of an index set, sorted, each with its encoded `Case` reply (`None` where the store
/// lacks the case: the register answers for those).
pub type Found = Vec<(String, Option<Vec<u8>>)>;

/// KEYS: an index set. ARGV: the key prefix. Returns id, reply, id, reply… (a missing reply is nil).
/// One round trip for a look-up instead of reading the set and then the cases: a counter's look-up
/// waited on both. The case keys are derived from the set's members, so this assumes one Redis
/// (not a cluster), as the rest of the store does.
const FIND_LUA: &str = r#"
local ids = redis.call('SMEMBERS', KEYS[1])
local out = {}
for i, id in ipairs(ids) do
  out[2 * i - 1] = id
  out[2 * i] = redis.call('HGET', ARGV[1] .. 'case:' .. id, 'case')
end
return out
"#;

/// KEYS: case hash, batch counts hash, unit index set, buyer index sets...
/// ARGV: version, state, payload, case id.
/// A case's unit and buyers never change, so the index sets are written with the case's first
/// version only (a case is updated four or five times on its way to a certificate).
const PUT_CASE_LUA: &str = r#"
local cur = redis.call('HMGET', KEYS[1], 'version', 'state')
if cur[1] and tonumber(cur[1]) >= tonumber(ARGV[1]) then return 0 end
if cur[2] then redis.call('HINCRBY', KEYS[2], cur[2], -1) end
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'state', ARGV[2], 'case', ARGV[3])
if not cur[1] then for i = 3, #KEYS do redis.call('SADD', KEYS[i], ARGV[4]) end end
return 1
"#;

#[derive(Clone)]
pub struct RedisWorkflow {
    conn: ConnectionManager,
    prefix: String,
    put: Arc<Script>,
    find: Arc<Script>,
}

/// Cases per pipeline: bounded so one huge batch doesn't stall the connection for others.
const PIPELINE_CHUNK: usize = 500;

impl RedisWorkflow {
    fn invocation<'a>(&'a self, c: &CaseSnapshot) -> redis::ScriptInvocation<'a> {
        let p = &self.prefix;
        let mut inv = self.put.prepare_invoke();
        inv.key(format!("{p}case:{}", c.case_id))
            .key(format!("{p}batch:{}:counts", c.batch_id))
            .key(format!("{p}unit:{}", c.unit_code));
        for b in &c.buyer_ids {
            inv.key(format!("{p}buyer:{}", buyer_key(b)));
        }
        inv.arg(c.version)
            .arg(&c.state)
            .arg(c.payload.as_slice())
            .arg(&c.case_id);
        inv
    }

    async fn put_cases(&self, cases: &[CaseSnapshot]) -> Result<usize, WorkflowError> {
        let mut applied = 0;
        let mut conn = self.conn.clone();
        for chunk in cases.chunks(PIPELINE_CHUNK) {
            let mut loaded_once = false;
            loop {
                let mut pipe = redis::pipe();
                for c in chunk {
                    pipe.invoke_script(&self.invocation(c));
                }
                match pipe.query_async::<Vec<i64>>(&mut conn).await {
                    Ok(results) => {
                        applied += results.iter().filter(|&&r| r == 1).count();
                        break;
                    }
                    // A pipeline runs EVALSHA only; after a Redis restart the script must be
                    // loaded again.
                    Err(e)
                        if e.kind()
                            == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
                            && !loaded_once =>
                    {
                        self.put.load_async(&mut conn).await?;
                        loaded_once = true;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(applied)
    }

    async fn put_case(&self, c: &CaseSnapshot) -> Result<bool, WorkflowError> {
        let inv = self.invocation(c);
        let mut conn = self.conn.clone();
        let applied: i64 = inv.invoke_async(&mut conn).await?;
        Ok(applied == 1)
    }

    async fn get_cases(&self, ids: &[String]) -> Result<Vec<Option<Vec<u8>>>, WorkflowError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hget(format!("{}case:{id}", self.prefix), "case");
        }
        let mut conn = self.conn.clone();
        Ok(pipe.query_async(&mut conn).await?)
    }

    async fn find(&self, index: &str) -> Result<Found, WorkflowError> {
        let mut conn = self.conn.clone();
        // The flat id, reply, id, reply… list decodes pairwise.
        let mut found: Found = self
            .find
            .key(format!("{}{index}", self.prefix))
            .arg(&self.prefix)
            .invoke_async(&mut conn)
            .await?;
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    async fn clear(&self) -> Result<(), WorkflowError> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}*", self.prefix);
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                let _: i64 = conn.del(keys).await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

#[derive(Default)]
struct Memory {
    cases: HashMap<String, (i64, String, Vec<u8>)>,
    counts: HashMap<String, HashMap<String, i64>>,
    index: HashMap<String, HashSet<String>>,
}

/// The sandbox's in-process store, with the same semantics as the Redis script.
#[derive(Clone, Default)]
pub struct MemoryWorkflow {
    inner: Arc<Mutex<Memory>>,
}

impl MemoryWorkflow {
    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        // A panic while holding the lock cannot leave the maps half-updated in a way later
        // readers care about (each update is a few inserts), so keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put_case(&self, c: &CaseSnapshot) -> bool {
        let mut m = self.lock();
        let old_state = match m.cases.get(&c.case_id) {
            Some((v, _, _)) if *v >= c.version => return false,
            Some((_, s, _)) => Some(s.clone()),
            None => None,
        };
        let counts = m.counts.entry(c.batch_id.clone()).or_default();
        if let Some(s) = old_state {
            *counts.entry(s).or_default() -= 1;
        }
        *counts.entry(c.state.clone()).or_default() += 1;
        m.cases.insert(
            c.case_id.clone(),
            (c.version, c.state.clone(), c.payload.clone()),
        );
        m.index
            .entry(format!("unit:{}", c.unit_code))
            .or_default()
            .insert(c.case_id.clone());
        for b in &c.buyer_ids {
            m.index
                .entry(format!("buyer:{}", buyer_key(b)))
                .or_default()
                .insert(c.case_id.clone());
        }
        true
    }

    fn get_cases(&self, ids: &[String]) -> Vec<Option<Vec<u8>>> {
        let m = self.lock();
        ids.iter()
            .map(|id| m.cases.get(id).map(|(_, _, p)| p.clone()))
            .collect()
    }

    fn index(&self, key: &str) -> Vec<String> {
        let m = self.lock();
        let mut ids: Vec<String> = m
            .index
            .get(key)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }

    fn counts(&self, batch_id: &str) -> HashMap<String, i64> {
        self.lock()
            .counts
            .get(batch_id)
            .cloned()
            .unwrap_or_default()
    }

    fn clear(&self) {
        *self.lock() = Memory::default();
    }
}
