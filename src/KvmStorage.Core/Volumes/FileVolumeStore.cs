using KvmStorage.Core.Access;
using KvmStorage.Core.Backends;
using KvmStorage.Core.Domains;
using KvmStorage.Core.Errors;
using KvmStorage.Core.IO;
using KvmStorage.Core.Images;
using KvmStorage.Core.Pools;

namespace KvmStorage.Core.Volumes;

/// <summary>
/// The volumes of file pools (dir, fs, netfs) whose folder is on this machine: image files directly inside the pool's
/// target folder, created, inspected, resized and removed by the native image engine. Both backends keep such
/// volumes here: the offline one for every file pool, the live one for the file pools of a daemon on this machine
/// (it then refreshes the pool, so libvirt lists the change).
/// </summary>
public sealed class FileVolumeStore
{
    private readonly IKvmHost host;

    public FileVolumeStore(IKvmHost host) => this.host = host;

    private HostPaths Paths => host.Paths;

    /// <summary>Every file in the pool's folder, as libvirt lists them (non-images as raw); unreadable ones as errors.</summary>
    public IReadOnlyList<VolumeReadResult> List(string poolName)
    {
        StoragePool pool = host.GetPool(poolName);
        var files = new HostFiles(host);
        string folder = RequireFolder(pool, files);
        var results = new List<VolumeReadResult>();
        IReadOnlyDictionary<string, SortedSet<string>> attachments = new DiskAttachments(host).BuildAttachmentIndex();
        foreach (string file in Directory.EnumerateFiles(folder).Order(StringComparer.Ordinal))
        {
            string name = System.IO.Path.GetFileName(file);
            if (name.StartsWith(AtomicFile.TempPrefix, StringComparison.Ordinal))
            {
                continue;
            }

            try
            {
                HostFiles.EnsureInsidePool(pool, file, name);
                results.Add(new VolumeReadResult(file, Read(file, pool.Name, attachments, files), null));
            }
            catch (Exception ex) when (ex is KvmStorageException or IOException && PosixFile.Vanished(file))
            {
                // Removed (or renamed away) by another process since the folder was read: gone, not an error.
            }
            catch (KvmStorageException ex)
            {
                results.Add(new VolumeReadResult(file, null, ex));
            }
        }

        return results;
    }

    public StorageVolume Get(string poolName, string name)
    {
        VolumeNames.Validate(name);
        StoragePool pool = host.GetPool(poolName);
        var files = new HostFiles(host);
        string file = System.IO.Path.Combine(RequireFolder(pool, files), name);
        if (!File.Exists(file))
        {
            throw VolumeNotFound(pool, name);
        }

        HostFiles.EnsureInsidePool(pool, file, name);
        try
        {
            return Read(file, pool.Name, new DiskAttachments(host).BuildAttachmentIndex(), files);
        }
        catch (Exception e) when (e is KvmStorageException or IOException && PosixFile.Vanished(file))
        {
            throw VolumeNotFound(pool, name);
        }
    }

    private static KvmStorageException VolumeNotFound(StoragePool pool, string name) =>
        new(ErrorKind.NotFound, VolumeErrorIds.VolumeNotFound, $"Pool '{pool.Name}' has no volume named '{PoolNames.Printable(name)}'.", name);

    /// <summary>An image file anywhere; its pool is the one whose folder holds it, if any.</summary>
    public StorageVolume GetByPath(string localPath)
    {
        string full = System.IO.Path.GetFullPath(localPath);
        if (Directory.Exists(full))
        {
            throw new KvmStorageException(ErrorKind.InvalidArgument, VolumeErrorIds.NotAVolume, $"'{full}' is a folder, not an image file.", full);
        }

        if (!File.Exists(full))
        {
            throw new KvmStorageException(ErrorKind.NotFound, ImageErrorIds.ImageNotFound, $"The image file '{full}' does not exist.", full);
        }

        // A pool's symlink pointing out of the pool is refused by path as it is by name (Add-VMDisk binds paths). Paths
        // the user gave reach here through the access layer (VolumeLocator), which keeps them under the host root; an
        // explicitly local file (Export-Volume's output) is read where it is.
        var files = new HostFiles(host);
        StoragePool? pool = files.PoolOf(full) is { } poolName ? host.GetPool(poolName) : null;
        if (pool is not null)
        {
            RequireFolder(pool, files);
            HostFiles.EnsureInsidePool(pool, full, System.IO.Path.GetFileName(full));
        }

        return Read(full, pool?.Name, new DiskAttachments(host).BuildAttachmentIndex(), files);
    }

    public StorageVolume Create(VolumeCreateRequest request, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        VolumeNames.Validate(request.Name);
        StoragePool pool = host.GetPool(request.Pool);
        var files = new HostFiles(host);
        string folder = RequireFolder(pool, files);
        string file = System.IO.Path.Combine(folder, request.Name);

        // What a killed New-Volume left behind: hidden, but it holds disk space.
        AtomicFile.RemoveAbandonedTempFiles(folder);
        if (File.Exists(file) || new FileInfo(file).LinkTarget is not null || Directory.Exists(file))
        {
            throw new KvmStorageException(ErrorKind.AlreadyExists, VolumeErrorIds.VolumeExists, $"Pool '{pool.Name}' already has a volume named '{request.Name}'.", request.Name);
        }

        ImageCreateOptions options = request.Image with { BackingRule = files.BackingRule };
        if (request.BackingPath is not null)
        {
            string backingHost = request.BackingPath;
            string recorded = backingHost;
            if (request.RelativeBacking)
            {
                string newHostFolder = System.IO.Path.GetDirectoryName(ToHostPath(file))!;
                recorded = System.IO.Path.GetRelativePath(newHostFolder, backingHost);
            }

            options = options with { BackingFile = recorded };
        }

        // The backing file passes the host's one rule (HostFiles.BackingRule) inside ImageCreator before it is read.
        ImageCreator.Create(file, options, progress, cancellationToken);
        return Read(file, pool.Name, null, files);
    }

    /// <summary>Deletes a volume's file. Refuses one that another image uses as its backing file unless forced.</summary>
    public void Remove(string poolName, string name, bool force)
    {
        StorageVolume volume = Get(poolName, name);
        VolumeRemoval.EnsureRemovable(host, volume, force);
        File.Delete(volume.LocalPath);
        AtomicFile.SyncDirectory(System.IO.Path.GetDirectoryName(volume.LocalPath)!);
    }

    public StorageVolume Resize(string poolName, string name, ulong newSize, ImageResizeOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        StorageVolume volume = Get(poolName, name);
        ImageResizer.Resize(volume.LocalPath, newSize, options, progress, cancellationToken);
        return Get(volume.Pool!, volume.Name);
    }

    private StorageVolume Read(string localFile, string? poolName, IReadOnlyDictionary<string, SortedSet<string>>? attachments, HostFiles files)
    {
        ImageInfo info = ImageInspector.Inspect(localFile, new ImageInspectOptions { ForceShare = true, AllowMissingBacking = true, BackingRule = files.BackingRule });
        FileStatus status = FileStatus.Get(localFile);
        ImageLayoutReport layout = ImageLayoutReport.Read(info);
        var chain = new List<string> { ToHostPath(info.Path) };
        chain.AddRange(info.BackingChain.Select(b => ToHostPath(b.Path)));
        return new StorageVolume
        {
            Name = System.IO.Path.GetFileName(localFile),
            Pool = poolName,
            Path = ToHostPath(localFile),
            LocalPath = localFile,
            ImageFormat = info.ImageFormat,
            Capacity = info.VirtualSize,
            Allocation = info.ActualSize,
            FileLength = info.FileLength,
            ClusterSize = info.ClusterSize,
            DiskType = info.DiskType,
            MinimumSize = layout.MinimumSize,
            FragmentationPercentage = layout.FragmentationPercentage,
            LogicalSectorSize = info.LogicalSectorSize,
            PhysicalSectorSize = info.PhysicalSectorSize,
            BackingFile = info.BackingFile,
            BackingPath = info.FullBackingFile is null ? null : ToHostPath(info.FullBackingFile),
            BackingFormat = info.BackingFormat,
            BackingRefusal = info.BackingRefusal,
            Chain = chain,
            Snapshots = info.Snapshots,
            Compat = info.Qcow2?.Compat,
            Dirty = info.DirtyFlag,
            Corrupt = info.Qcow2?.Corrupt ?? false,
            Encryption = info.Encryption,
            Mode = (UnixFileMode)(status.Mode & 0xFFF),
            Owner = (int)status.Uid,
            Group = (int)status.Gid,
            Image = info,
            HostName = host.Name,
            AttachedTo = attachments is not null && attachments.TryGetValue(ToHostPath(localFile), out SortedSet<string>? vms) ? [.. vms] : [],
        };
    }

    private string ToHostPath(string local) => Paths.ToHostPath(local) ?? local;

    private static string RequireFolder(StoragePool pool, HostFiles files)
    {
        if (!pool.PoolType.HoldsFileVolumes() || pool.LocalPath is null)
        {
            throw new KvmStorageException(
                ErrorKind.NotSupported,
                VolumeErrorIds.PoolHasNoFolder,
                $"Pool '{pool.Name}' is of type {pool.Type}: its volumes are managed by libvirt, which the offline backend cannot reach.",
                pool.Name);
        }

        // A pool folder that is (or lies behind) a link out of the host root is refused before anything in it is touched.
        files.PoolFolder(pool);
        if (!Directory.Exists(pool.LocalPath))
        {
            throw new KvmStorageException(
                ErrorKind.ResourceUnavailable,
                VolumeErrorIds.PoolFolderMissing,
                $"The folder '{pool.Path}' of pool '{pool.Name}' does not exist. Build it first (New-StoragePool -Build) or mount it.",
                pool.Name);
        }

        return pool.LocalPath;
    }
}
