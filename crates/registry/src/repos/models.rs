use diesel::prelude::*;
use onboard_domain::{DeviceModel, DeviceModelRepository, ModelCode, RepoError};

use crate::db::DbConnection;
use crate::error::DieselResultExt;
use crate::rows::ModelRow;
use crate::schema::device_models as m;

const ENTITY: &str = "device model";

impl DeviceModelRepository for DbConnection {
    fn insert_model(&mut self, model: &DeviceModel) -> Result<DeviceModel, RepoError> {
        diesel::insert_into(m::table)
            .values(&ModelRow::from_domain(model))
            .execute(self)
            .repo(ENTITY)?;
        self.model(&model.code)
    }

    fn model(&mut self, code: &ModelCode) -> Result<DeviceModel, RepoError> {
        m::table
            .find(code.as_str())
            .select(ModelRow::as_select())
            .first(self)
            .repo(ENTITY)?
            .into_domain()
    }

    fn list_models(&mut self) -> Result<Vec<DeviceModel>, RepoError> {
        let rows: Vec<ModelRow> = m::table
            .order(m::code.asc())
            .select(ModelRow::as_select())
            .load(self)
            .repo(ENTITY)?;
        crate::rows::all(rows, ModelRow::into_domain)
    }

    fn update_model(&mut self, model: &DeviceModel) -> Result<DeviceModel, RepoError> {
        let row = ModelRow::from_domain(model);
        let n = diesel::update(m::table.find(model.code.as_str()))
            .set((
                m::name.eq(&row.name),
                m::description.eq(&row.description),
                m::publish_topics.eq(&row.publish_topics),
                m::subscribe_topics.eq(&row.subscribe_topics),
                m::max_qos.eq(row.max_qos),
                m::retain_allowed.eq(row.retain_allowed),
                m::config.eq(&row.config),
                m::updated_at.eq(row.updated_at),
            ))
            .execute(self)
            .repo(ENTITY)?;
        if n == 0 {
            return Err(RepoError::NotFound { entity: ENTITY });
        }
        self.model(&model.code)
    }

    fn delete_model(&mut self, code: &ModelCode) -> Result<(), RepoError> {
        let n = diesel::delete(m::table.find(code.as_str()))
            .execute(self)
            .repo(ENTITY)?;
        if n == 0 {
            return Err(RepoError::NotFound { entity: ENTITY });
        }
        Ok(())
    }
}
