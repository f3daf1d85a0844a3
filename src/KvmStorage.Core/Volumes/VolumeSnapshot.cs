using KvmStorage.Core.Images;

namespace KvmStorage.Core.Volumes;

/// <summary>One internal snapshot of a qcow2 volume, as Get-VolumeSnapshot reports it.</summary>
public sealed class VolumeSnapshot
{
    /// <summary>The pool of the volume; null for an image outside every pool.</summary>
    public string? Pool { get; init; }

    public required string VolumeName { get; init; }

    /// <summary>The volume's path as the host sees it.</summary>
    public required string Path { get; init; }

    /// <summary>Where the volume's file lies under the session's host root.</summary>
    public required string LocalPath { get; init; }

    /// <summary>The unique id qemu assigns (1, 2, 3, ...).</summary>
    public required string Id { get; init; }

    public required string Name { get; init; }

    /// <summary>When the snapshot was taken (UTC).</summary>
    public required DateTimeOffset Date { get; init; }

    /// <summary>How long the guest had been running at the snapshot (zero for disk-only snapshots).</summary>
    public required TimeSpan VmClock { get; init; }

    /// <summary>Bytes of saved VM state (0 for disk-only snapshots).</summary>
    public required ulong VmStateSize { get; init; }

    /// <summary>The virtual size when the snapshot was taken; null when the entry does not record it.</summary>
    public ulong? DiskSize { get; init; }

    /// <summary>The record/replay instruction count; null when icount was disabled.</summary>
    public long? Icount { get; init; }

    public static VolumeSnapshot From(StorageVolume volume, SnapshotInfo snapshot)
    {
        ArgumentNullException.ThrowIfNull(volume);
        ArgumentNullException.ThrowIfNull(snapshot);
        return new VolumeSnapshot
        {
            Pool = volume.Pool,
            VolumeName = volume.Name,
            Path = volume.Path,
            LocalPath = volume.LocalPath,
            Id = snapshot.Id,
            Name = snapshot.Name,
            Date = snapshot.Date,
            VmClock = TimeSpan.FromTicks((long)(snapshot.VmClockNanoseconds / 100)),
            VmStateSize = snapshot.VmStateSize,
            DiskSize = snapshot.DiskSize,
            Icount = snapshot.Icount,
        };
    }

    public override string ToString() => $"{Path}@{Name}";
}
