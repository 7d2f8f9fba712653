"""Retention finds its boundary by position (prune_events): no index on created_at for every
event to pay at write time."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('events', '0005_stamp_generic_plan'),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='event',
            name='event_created_at',
        ),
    ]
