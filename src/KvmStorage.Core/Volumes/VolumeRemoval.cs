using KvmStorage.Core.Backends;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;

namespace KvmStorage.Core.Volumes;

/// <summary>When a volume may be deleted, whichever backend deletes it and whichever command asks.</summary>
public static class VolumeRemoval
{
    /// <summary>
    /// The refusals of removing <paramref name="volume"/>, checked before anything is asked or deleted: a VM uses it or
    /// another image is built on it (unless <paramref name="force"/>), or a process holds it open for writing.
    /// <paramref name="detachingFrom"/> is a VM whose use does not count (Remove-VMDisk -DeleteVolume detaches it first).
    /// </summary>
    public static void EnsureRemovable(IKvmHost host, StorageVolume volume, bool force, string? detachingFrom = null)
    {
        ArgumentNullException.ThrowIfNull(host);
        ArgumentNullException.ThrowIfNull(volume);
        if (!force)
        {
            string[] users = [.. volume.AttachedTo.Where(vm => vm != detachingFrom)];
            if (users.Length > 0)
            {
                throw new KvmStorageException(
                    ErrorKind.InvalidOperation,
                    VolumeErrorIds.VolumeAttached,
                    $"Volume '{volume.Name}' is in use by VM {string.Join(", ", users.Select(v => $"'{v}'"))}. Detach it first (Remove-VMDisk), or use -Force.",
                    volume.Name);
            }

            BackingUsers.ThrowIfAny(host, volume, "removing it would break them. Use -Force to remove it anyway.");
        }

        // A VM being detached may hold its image until the detach completes; the delete itself checks again.
        if (detachingFrom is null && host.IsLocal && File.Exists(volume.LocalPath))
        {
            ImageLock.EnsureNotInUse(volume.LocalPath, forWrite: true);
        }
    }
}
