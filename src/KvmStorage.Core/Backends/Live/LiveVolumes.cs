using System.Xml;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Libvirt;
using KvmStorage.Core.Pools;
using KvmStorage.Core.Volumes;
using KvmStorage.Core.Xml;

namespace KvmStorage.Core.Backends.Live;

/// <summary>
/// The live backend's volumes. A file pool whose folder is on this machine is written by the native image engine
/// (<see cref="FileVolumeStore"/>, as offline) and then refreshed, so libvirt lists the change; the volumes of other
/// pools, and of any pool of a remote host, are libvirt's, described by their <see cref="VolumeDefinition"/>.
/// </summary>
internal sealed class LiveVolumes(LiveHost host)
{
    private readonly FileVolumeStore files = new(host);

    public IReadOnlyList<VolumeReadResult> List(string pool)
    {
        if (UsesFileEngine(host.GetPool(pool)))
        {
            return files.List(pool);
        }

        using LibvirtPool handle = host.Connection.LookupPool(pool);
        var results = new List<VolumeReadResult>();
        foreach (LibvirtVolume volume in handle.ListVolumes().OrderBy(v => v.Name, StringComparer.Ordinal))
        {
            using (volume)
            {
                try
                {
                    results.Add(new VolumeReadResult(volume.Name, Read(volume, pool), null));
                }
                catch (KvmStorageException ex)
                {
                    results.Add(new VolumeReadResult(volume.Name, null, LibvirtErrorMapping.Translate(ex)));
                }
            }
        }

        return results;
    }

    public StorageVolume Get(string pool, string name)
    {
        VolumeNames.Validate(name);
        if (UsesFileEngine(host.GetPool(pool)))
        {
            return files.Get(pool, name);
        }

        using LibvirtPool handle = host.Connection.LookupPool(pool);
        using LibvirtVolume volume = handle.LookupVolume(name);
        return Read(volume, pool);
    }

    public StorageVolume GetByPath(string localPath)
    {
        if (host.IsLocal && (File.Exists(localPath) || Directory.Exists(localPath)))
        {
            return files.GetByPath(localPath);
        }

        LibvirtVolume volume;
        try
        {
            volume = host.Connection.LookupVolumeByPath(localPath);
        }
        catch (LibvirtException ex) when (host.IsLocal && ex.Code == LibvirtErrorCodes.NoStorageVolume)
        {
            // Neither a file here nor a volume libvirt knows (rbd, gluster): the same ImageNotFound as offline.
            return files.GetByPath(localPath);
        }

        using LibvirtVolume _ = volume;
        string? pool = host.ListPools().Select(r => r.Pool).FirstOrDefault(p => p?.Path is not null && Path.GetDirectoryName(localPath) == Path.TrimEndingDirectorySeparator(p.Path))?.Name;
        return Read(volume, pool);
    }

    public StorageVolume Create(VolumeCreateRequest request, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        VolumeNames.Validate(request.Name);
        host.EnsureWritable($"Creating volume '{request.Name}'", request.Name);
        StoragePool pool = host.GetPool(request.Pool);
        RequireActive(pool);
        if (UsesFileEngine(pool))
        {
            StorageVolume created = files.Create(request, progress, cancellationToken);
            host.RefreshAfterWrite(pool.Name, $"The image '{created.Path}' was written");
            return created;
        }

        ImageCreateOptions image = request.Image;
        if (image.Encryption is not null)
        {
            // libvirt would need the secret defined first and runs qemu-img itself: not offered yet.
            throw new KvmStorageException(ErrorKind.NotSupported, Images.Luks.LuksErrorIds.InvalidEncryptionOptions, $"Encrypted volumes can be created in local folder pools only, not in the {pool.Type} pool '{pool.Name}'.", request.Name);
        }

        using LibvirtPool handle = host.Connection.LookupPool(pool.Name);
        VolumeDefinition definition = VolumeDefinition.Create(request.Name, image.VirtualSize, image.Format, image.Compat, request.BackingPath, image.BackingFormat);

        // The XML is generated here from typed values; schema validation (8.10+) is not supported by every driver.
        using LibvirtVolume volume = handle.CreateVolume(definition.ToXml(), validate: false, request.Name);
        return Read(volume, pool.Name);
    }

    public void Remove(string pool, string name, bool force)
    {
        host.EnsureWritable($"Removing volume '{name}'", name);
        StoragePool p = host.GetPool(pool);
        if (UsesFileEngine(p))
        {
            files.Remove(pool, name, force);
            RefreshIfRunning(p, $"The image '{name}' was deleted");
            return;
        }

        using LibvirtPool handle = host.Connection.LookupPool(pool);
        using LibvirtVolume volume = handle.LookupVolume(name);
        volume.Delete();
    }

    public StorageVolume Resize(string pool, string name, ulong newSize, ImageResizeOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        host.EnsureWritable($"Resizing volume '{name}'", name);
        StoragePool p = host.GetPool(pool);
        if (UsesFileEngine(p))
        {
            StorageVolume resized = files.Resize(pool, name, newSize, options, progress, cancellationToken);
            RefreshIfRunning(p, $"The image '{resized.Path}' was resized");
            return resized;
        }

        using LibvirtPool handle = host.Connection.LookupPool(pool);
        using LibvirtVolume volume = handle.LookupVolume(name);
        volume.Resize(newSize, options.AllowShrink);
        return Read(volume, pool);
    }

    private bool UsesFileEngine(StoragePool pool) => host.IsLocal && pool.PoolType.HoldsFileVolumes() && pool.LocalPath is not null;

    /// <summary>An inactive pool lists nothing to libvirt, and refreshing it fails: only a running one is refreshed.</summary>
    private void RefreshIfRunning(StoragePool pool, string done)
    {
        if (pool.PoolState == PoolState.Running)
        {
            host.RefreshAfterWrite(pool.Name, done);
        }
    }

    private static void RequireActive(StoragePool pool)
    {
        if (pool.PoolState != PoolState.Running)
        {
            throw new KvmStorageException(ErrorKind.InvalidOperation, BackendErrorIds.PoolNotActive, $"Pool '{pool.Name}' is not running ({pool.State}); libvirt takes new volumes only in a running pool. Start it with Start-StoragePool.", pool.Name);
        }
    }

    /// <summary>A volume as libvirt describes it (used where the image file cannot be read from this machine).</summary>
    private StorageVolume Read(LibvirtVolume volume, string? pool)
    {
        VolumeDefinition definition;
        try
        {
            definition = VolumeDefinition.FromXml(LibvirtXml.Parse(volume.GetXml()));
        }
        catch (XmlException ex)
        {
            throw new KvmStorageException(ErrorKind.InvalidData, VolumeErrorIds.VolumeNotFound, $"libvirt returned malformed XML for volume '{volume.Name}': {ex.Message}", volume.Name, ex);
        }

        string path = definition.TargetPath ?? volume.GetPath();
        ImageFormat format = ImageFormats.TryParse(definition.Format, out ImageFormat f) ? f : ImageFormat.Raw;
        ulong physical = definition.Physical ?? definition.Allocation;
        string? backingPath = definition.BackingPath;
        var info = new ImageInfo
        {
            Path = path,
            ImageFormat = format,
            DiskType = backingPath is not null ? DiskType.Differencing : format == ImageFormat.Raw ? DiskType.Fixed : DiskType.Dynamic,
            VirtualSize = definition.Capacity,
            ActualSize = definition.Allocation,
            FileLength = physical,
            BackingFile = backingPath,
            FullBackingFile = backingPath,
            BackingFormat = definition.BackingFormat,
        };
        return new StorageVolume
        {
            Name = volume.Name,
            Pool = pool,
            Path = path,
            LocalPath = path,
            ImageFormat = format,
            Capacity = definition.Capacity,
            Allocation = definition.Allocation,
            FileLength = physical,
            DiskType = info.DiskType,
            BackingFile = backingPath,
            BackingPath = backingPath,
            BackingFormat = info.BackingFormat,
            Chain = backingPath is null ? [path] : [path, backingPath],
            Compat = definition.Compat,
            Image = info,
            HostName = host.Name,
        };
    }
}
