/* Schema of the core component in the state store.
 *
 * Migrations are forward-only and never edited once released: a change is
 * a new entry at the end. Other modules register their own components
 * (infomodel, ct, admin, ...) with their own migrations.
 */
#include "konnektor/store.h"
#include "konnektor/util.h"

const kon_migration_t kon_core_migrations[] = {
        {
                /* The protocols (protocol.h). kind is kon_proto_kind_t, type
                 * and severity the bus enums; params is a JSON object.
                 * (kind, id) serves paging newest-first and rotation by
                 * count, (kind, time_us) rotation by age. */
                .version = 1,
                .sql = "CREATE TABLE protocol ("
                       " id INTEGER PRIMARY KEY AUTOINCREMENT,"
                       " kind INTEGER NOT NULL,"
                       " time_us INTEGER NOT NULL,"
                       " seq INTEGER NOT NULL,"
                       " topic TEXT NOT NULL,"
                       " type INTEGER NOT NULL,"
                       " severity INTEGER NOT NULL,"
                       " message TEXT NOT NULL,"
                       " params TEXT NOT NULL);"
                       "CREATE INDEX protocol_kind_id ON protocol(kind, id);"
                       "CREATE INDEX protocol_kind_time ON protocol(kind, time_us);",
        },
};

const size_t kon_core_migrations_count = KON_ARRAY_SIZE(kon_core_migrations);
