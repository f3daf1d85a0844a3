using KvmStorage.Core.Backends;
using KvmStorage.Core.Pools;

namespace KvmStorage.Core.Volumes;

/// <summary>Which images in a host's file pools build on an image: the refusals of Remove-Volume and Merge-Volume.</summary>
internal static class BackingUsers
{
    /// <summary>
    /// Images in any file pool (other than <paramref name="exclude"/> and <paramref name="hostPath"/> itself) whose
    /// backing chain includes <paramref name="hostPath"/>, leaving out those that reach it through
    /// <paramref name="through"/> (whose view a merge of it keeps), each as a quoted host path.
    /// </summary>
    public static List<string> Find(IKvmHost host, string hostPath, IReadOnlySet<string>? exclude = null, string? through = null)
    {
        var users = new List<string>();
        foreach (StoragePool pool in host.ListFilePools())
        {
            IReadOnlyList<VolumeReadResult> volumes;
            try
            {
                volumes = host.ListVolumes(pool.Name);
            }
            catch (Errors.KvmStorageException e) when (e.ErrorId == Access.AccessErrorIds.PathOutsideHostRoot)
            {
                continue; // A pool the module never reads (its folder leads out of the root) holds no image it can see.
            }

            foreach (VolumeReadResult v in volumes)
            {
                if (v.Volume is { } other && other.Path != hostPath && exclude?.Contains(other.Path) != true
                    && other.Chain.Skip(1).Contains(hostPath) && (through is null || !other.Chain.Contains(through)))
                {
                    users.Add($"'{other.Path}'");
                }
            }
        }

        return users;
    }

    /// <summary>
    /// Refuses (<c>VolumeIsBackingFile</c>) an action on <paramref name="volume"/> when other images build on it;
    /// <paramref name="consequence"/> ends the message ("removing it would break them").
    /// </summary>
    public static void ThrowIfAny(IKvmHost host, StorageVolume volume, string consequence)
    {
        List<string> users = Find(host, volume.Path);
        if (users.Count > 0)
        {
            throw new Errors.KvmStorageException(
                Errors.ErrorKind.InvalidOperation,
                VolumeErrorIds.VolumeIsBackingFile,
                $"Volume '{volume.Name}' is the backing file of {string.Join(", ", users)}; {consequence}",
                volume.Name);
        }
    }
}
