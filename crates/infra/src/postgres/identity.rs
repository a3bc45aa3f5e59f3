//! The [`UserRepository`] on Postgres.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use domain::error::Unavailable;
use domain::identity::{
    CreateUserError, LoginId, NewUser, PasswordHash, Role, User, UserCredentials, UserId, UserName,
    UserRepository,
};
use domain::paging::{Page, PageRequest};

use super::paging::page_of;
use super::schema::users;
use super::{Postgres, error::is_unique_violation, unavailable};

#[derive(Clone)]
pub struct PgUserRepository {
    db: Postgres,
}

impl std::fmt::Debug for PgUserRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgUserRepository")
    }
}

impl PgUserRepository {
    pub fn new(db: Postgres) -> Self {
        Self { db }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
struct UserRow {
    id: i64,
    login_id: String,
    name: String,
    password_hash: Option<String>,
    role: String,
    created_at: DateTime<Utc>,
}

#[derive(Insertable)]
#[diesel(table_name = users)]
struct NewUserRow<'a> {
    login_id: &'a str,
    name: &'a str,
    password_hash: Option<&'a str>,
    role: &'a str,
}

impl UserRow {
    /// The user a gateway may name: one without a password.
    fn into_gateway_user(self) -> Result<Option<User>, Unavailable> {
        if self.password_hash.is_some() {
            return Ok(None);
        }
        self.into_user().map(Some)
    }

    /// Rows are written only through validated types, so a row that does not
    /// parse means the table was edited by hand: report it, do not guess.
    fn into_credentials(self) -> Result<UserCredentials, Unavailable> {
        let corrupt =
            |what: &str| unavailable(format!("users row {} has an invalid {what}", self.id));
        let user = User {
            id: UserId::new(self.id),
            login_id: LoginId::parse(&self.login_id).map_err(|_| corrupt("login_id"))?,
            name: UserName::parse(&self.name).map_err(|_| corrupt("name"))?,
            role: Role::parse(&self.role).map_err(|_| corrupt("role"))?,
            created_at: self.created_at,
        };
        Ok(UserCredentials {
            user,
            password_hash: self.password_hash.map(PasswordHash::from_phc),
        })
    }

    fn into_user(self) -> Result<User, Unavailable> {
        self.into_credentials().map(|c| c.user)
    }
}

#[async_trait]
impl UserRepository for PgUserRepository {
    async fn create(&self, user: NewUser) -> Result<User, CreateUserError> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                let row = diesel::insert_into(users::table)
                    .values(NewUserRow {
                        login_id: user.login_id.as_str(),
                        name: user.name.as_str(),
                        password_hash: user.password_hash.as_ref().map(PasswordHash::as_str),
                        role: user.role.as_str(),
                    })
                    .returning(UserRow::as_returning())
                    .get_result(&mut *conn)
                    .await
                    .map_err(|e| {
                        if is_unique_violation(&e, "users_login_id_key") {
                            CreateUserError::LoginIdTaken
                        } else {
                            CreateUserError::Unavailable(unavailable(e))
                        }
                    })?;
                Ok(row.into_user()?)
            })
            .await
    }

    async fn find_credentials(
        &self,
        login_id: &LoginId,
    ) -> Result<Option<UserCredentials>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                by_login(login_id)
                    .first(&mut *conn)
                    .await
                    .optional()
                    .map_err(unavailable)?
                    .map(UserRow::into_credentials)
                    .transpose()
            })
            .await
    }

    async fn find_by_id(&self, id: UserId) -> Result<Option<User>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                users::table
                    .find(id.get())
                    .select(UserRow::as_select())
                    .first(&mut *conn)
                    .await
                    .optional()
                    .map_err(unavailable)?
                    .map(UserRow::into_user)
                    .transpose()
            })
            .await
    }

    async fn find_or_provision(&self, login_id: &LoginId) -> Result<Option<User>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                // The common case is a known user: a read, no write, no row lock.
                if let Some(row) = by_login(login_id)
                    .first(&mut *conn)
                    .await
                    .optional()
                    .map_err(unavailable)?
                {
                    return row.into_gateway_user();
                }
                let inserted = diesel::insert_into(users::table)
                    .values(NewUserRow {
                        login_id: login_id.as_str(),
                        name: login_id.as_str(),
                        password_hash: None,
                        role: Role::User.as_str(),
                    })
                    .on_conflict(users::login_id)
                    .do_nothing()
                    .returning(UserRow::as_returning())
                    .get_result(&mut *conn)
                    .await
                    .optional()
                    .map_err(unavailable)?;
                let row = match inserted {
                    Some(row) => row,
                    // A concurrent request provisioned it first.
                    None => by_login(login_id)
                        .first(&mut *conn)
                        .await
                        .map_err(unavailable)?,
                };
                row.into_gateway_user()
            })
            .await
    }

    async fn upsert_admin(
        &self,
        login_id: &LoginId,
        hash: &PasswordHash,
    ) -> Result<User, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                diesel::insert_into(users::table)
                    .values(NewUserRow {
                        login_id: login_id.as_str(),
                        name: login_id.as_str(),
                        password_hash: Some(hash.as_str()),
                        role: Role::Admin.as_str(),
                    })
                    .on_conflict(users::login_id)
                    .do_update()
                    .set((
                        users::role.eq(Role::Admin.as_str()),
                        users::password_hash.eq(hash.as_str()),
                        users::updated_at.eq(diesel::dsl::now),
                    ))
                    .returning(UserRow::as_returning())
                    .get_result(&mut *conn)
                    .await
                    .map_err(unavailable)?
                    .into_user()
            })
            .await
    }

    async fn list(&self, page: PageRequest) -> Result<Page<User>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                let total: i64 = users::table
                    .count()
                    .get_result(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                let rows = users::table
                    .order(users::id.asc())
                    .offset(page.offset())
                    .limit(page.limit())
                    .select(UserRow::as_select())
                    .load(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                page_of(rows, UserRow::into_user, page, total)
            })
            .await
    }
}

/// The query for the user row with a given login id.
type ByLogin<'a> = diesel::dsl::Select<
    diesel::dsl::Filter<users::table, diesel::dsl::Eq<users::login_id, &'a str>>,
    diesel::dsl::AsSelect<UserRow, diesel::pg::Pg>,
>;

/// The user row with this login id.
fn by_login(login_id: &LoginId) -> ByLogin<'_> {
    users::table
        .filter(users::login_id.eq(login_id.as_str()))
        .select(UserRow::as_select())
}
