using KvmStorage.Core.Backends;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Pools;
using KvmStorage.Core.Volumes;

namespace KvmStorage.Core.Access;

/// <summary>How a command was told which volume to work on: the three ways every volume cmdlet accepts.</summary>
public abstract record VolumeSpec
{
    private VolumeSpec()
    {
    }

    /// <summary>A volume of a pool, by name (<c>-Pool default -Name x.qcow2</c>, or a record with Pool and Name).</summary>
    public sealed record InPool(string Pool, string Name) : VolumeSpec
    {
        public override string ToString() => $"{Pool}/{Name}";
    }

    /// <summary>
    /// A path the user typed (<paramref name="Typed"/>) and PowerShell's resolution of it against the current location
    /// (<paramref name="Local"/>): resolved by <see cref="HostFiles.ResolveUserPath"/>.
    /// </summary>
    public sealed record AtPath(string Typed, string Local) : VolumeSpec
    {
        public override string ToString() => Typed;
    }

    /// <summary>A file of this machine (from Get-ChildItem, or a wildcard expanded here): it must lie under the host root.</summary>
    public sealed record AtLocalPath(string Local) : VolumeSpec
    {
        public override string ToString() => Local;
    }

    /// <summary>A host path the module itself emitted (a volume's or a VM disk's <c>Path</c>/<c>Source</c>).</summary>
    public sealed record AtHostPath(string HostPath) : VolumeSpec
    {
        public override string ToString() => HostPath;
    }

    /// <summary>A volume object: by its pool and name when it has a pool (re-read, never trusted as it was), else by its path.</summary>
    public static VolumeSpec Of(StorageVolume volume)
    {
        ArgumentNullException.ThrowIfNull(volume);
        return volume.Pool is { } pool ? new InPool(pool, volume.Name) : new AtHostPath(volume.Path);
    }

    /// <summary>A snapshot object names its volume: by pool and name when it has a pool, else by its host path.</summary>
    public static VolumeSpec Of(Volumes.VolumeSnapshot snapshot)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        return snapshot.Pool is { } pool ? new InPool(pool, snapshot.VolumeName) : new AtHostPath(snapshot.Path);
    }
}

/// <summary>
/// The one resolver from a <see cref="VolumeSpec"/> to a volume or its file, for every cmdlet: the same argument gives
/// the same file everywhere, with the containment rules of <see cref="HostFiles"/> applied on the way.
/// </summary>
public sealed class VolumeLocator(IKvmHost host)
{
    private readonly HostFiles files = new(host);

    public HostFiles Files => files;

    /// <summary>The volume, read afresh (its image inspected, its backing chain checked by the host's rule).</summary>
    public StorageVolume Get(VolumeSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        return spec is VolumeSpec.InPool p ? host.GetVolume(p.Pool, p.Name) : host.GetVolumeByPath(File(spec));
    }

    /// <summary>
    /// The volume's file on this machine, contained (under the root, not through a pool's link out of its folder) but
    /// not inspected: for commands that must reach an image whose metadata is damaged (Test-Volume).
    /// </summary>
    public string File(VolumeSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        string local;
        switch (spec)
        {
            case VolumeSpec.InPool p:
                VolumeNames.Validate(p.Name);
                StoragePool pool = host.GetPool(p.Pool);
                local = Path.Combine(files.PoolFolder(pool), p.Name);
                if (!System.IO.File.Exists(local) && new FileInfo(local).LinkTarget is null)
                {
                    throw new KvmStorageException(ErrorKind.NotFound, VolumeErrorIds.VolumeNotFound, $"Pool '{pool.Name}' has no volume named '{PoolNames.Printable(p.Name)}'.", p.Name);
                }

                HostFiles.EnsureInsidePool(pool, local, p.Name);
                return local;
            case VolumeSpec.AtPath a:
                local = files.ResolveUserPath(a.Typed, a.Local);
                break;
            case VolumeSpec.AtLocalPath l:
                local = files.ResolveLocalPath(l.Local);
                break;
            case VolumeSpec.AtHostPath h:
                local = files.ResolveHostPath(h.HostPath);
                break;
            default:
                throw new ArgumentException($"Unknown volume spec {spec}.", nameof(spec));
        }

        if (files.PoolOf(local) is { } poolName)
        {
            StoragePool pool = host.GetPool(poolName);
            files.PoolFolder(pool);
            HostFiles.EnsureInsidePool(pool, local, Path.GetFileName(local));
        }

        return local;
    }
}
