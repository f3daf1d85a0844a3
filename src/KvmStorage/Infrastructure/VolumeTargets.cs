using System.Management.Automation;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Hosting;
using KvmStorage.Core.Images;
using KvmStorage.Core.Volumes;

namespace KvmStorage.Infrastructure;

/// <summary>Resolves the volume (and snapshot) a volume cmdlet works on, before it asks ShouldProcess.</summary>
internal static class VolumeTargets
{
    /// <summary>Reads the volume afresh: a volume object by its pool and name (or path), a path through the provider.</summary>
    public static StorageVolume ResolveVolume(PSCmdlet cmdlet, IKvmHost host, VolumeReference reference) => reference.Volume switch
    {
        { Pool: { } pool } v => host.GetVolume(pool, v.Name),
        { } v => host.GetVolumeByPath(v.LocalPath),
        null => host.GetVolumeByPath(cmdlet.GetUnresolvedProviderPathFromPSPath(reference.Path)),
    };

    /// <summary>Refuses volumes that cannot hold internal snapshots.</summary>
    public static void RequireQcow2(StorageVolume volume)
    {
        if (volume.Format != ImageFormat.Qcow2)
        {
            throw new KvmStorageException(ErrorKind.NotSupported, ImageErrorIds.SnapshotsNotSupported, $"'{volume.Path}' is a {volume.Format.ToQemuName()} image; only qcow2 images have internal snapshots.", volume.Path);
        }
    }

    /// <summary>The snapshot with this id and/or name (both must match when both are given).</summary>
    public static SnapshotInfo Find(StorageVolume volume, string? id, string? name)
    {
        RequireQcow2(volume);
        SnapshotInfo? found = volume.Snapshots.FirstOrDefault(s => (id is null || s.Id == id) && (name is null || s.Name == name));
        if (found is null)
        {
            string what = (id, name) switch
            {
                (not null, not null) => $"'{name}' (id {id})",
                (not null, null) => $"with id '{id}'",
                _ => $"named '{name}'",
            };
            throw new KvmStorageException(ErrorKind.NotFound, ImageErrorIds.SnapshotNotFound, $"'{volume.Path}' has no snapshot {what}.", name ?? id);
        }

        return found;
    }
}
