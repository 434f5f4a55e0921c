use chrono::NaiveDateTime;
use diesel::prelude::*;
use onboard_domain::{FirmwareRepository, ModelCode, ModelFirmware, RepoError, Sha256Digest};

use crate::db::DbConnection;
use crate::error::DieselResultExt;
use crate::rows::{ts, utc};
use crate::schema::device_models as m;
use crate::schema::model_firmware as f;

const ENTITY: &str = "device model firmware";

#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = f, treat_none_as_default_value = false)]
struct FirmwareRow {
    model_code: String,
    version: String,
    sha256: String,
    size: i64,
    project: String,
    idf_version: String,
    uploaded_at: NaiveDateTime,
}

impl FirmwareRow {
    fn from_domain(fw: &ModelFirmware) -> Result<Self, RepoError> {
        Ok(Self {
            model_code: fw.model.as_str().to_owned(),
            version: fw.version.clone(),
            sha256: fw.sha256.as_str().to_owned(),
            size: i64::try_from(fw.size)
                .map_err(|_| RepoError::Corrupt("firmware size out of range".into()))?,
            project: fw.project.clone(),
            idf_version: fw.idf_version.clone(),
            uploaded_at: ts(fw.uploaded_at),
        })
    }

    fn into_domain(self) -> Result<ModelFirmware, RepoError> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            RepoError::Corrupt(format!("firmware {what}: {e}"))
        };
        Ok(ModelFirmware {
            model: ModelCode::parse(&self.model_code).map_err(|e| corrupt("model", &e))?,
            version: self.version,
            sha256: Sha256Digest::parse(&self.sha256).map_err(|e| corrupt("sha256", &e))?,
            size: u64::try_from(self.size).map_err(|e| corrupt("size", &e))?,
            project: self.project,
            idf_version: self.idf_version,
            uploaded_at: utc(self.uploaded_at),
        })
    }
}

impl FirmwareRepository for DbConnection {
    fn set_model_firmware(&mut self, firmware: &ModelFirmware) -> Result<(), RepoError> {
        let code = firmware.model.as_str();
        let exists: i64 = m::table
            .filter(m::code.eq(code))
            .count()
            .get_result(self)
            .repo(ENTITY)?;
        if exists == 0 {
            return Err(RepoError::NotFound {
                entity: "device model",
            });
        }
        // Replace: delete and insert in the caller's transaction (one statement
        // each on both backends, no dialect-specific upsert).
        diesel::delete(f::table.find(code))
            .execute(self)
            .repo(ENTITY)?;
        diesel::insert_into(f::table)
            .values(&FirmwareRow::from_domain(firmware)?)
            .execute(self)
            .repo(ENTITY)?;
        Ok(())
    }

    fn model_firmware(&mut self, code: &ModelCode) -> Result<Option<ModelFirmware>, RepoError> {
        f::table
            .find(code.as_str())
            .select(FirmwareRow::as_select())
            .first(self)
            .optional()
            .repo(ENTITY)?
            .map(FirmwareRow::into_domain)
            .transpose()
    }

    fn list_model_firmware(&mut self) -> Result<Vec<ModelFirmware>, RepoError> {
        let rows: Vec<FirmwareRow> = f::table
            .order(f::model_code.asc())
            .select(FirmwareRow::as_select())
            .load(self)
            .repo(ENTITY)?;
        crate::rows::all(rows, FirmwareRow::into_domain)
    }
}
