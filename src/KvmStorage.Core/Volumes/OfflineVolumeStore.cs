using KvmStorage.Core.Domains;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Hosting;
using KvmStorage.Core.Images;
using KvmStorage.Core.IO;
using KvmStorage.Core.Pools;

namespace KvmStorage.Core.Volumes;

/// <summary>
/// Volumes of file-based pools (dir, fs, netfs): image files directly inside the pool's target folder,
/// created, inspected, resized and removed by the native image engine.
/// </summary>
public sealed class OfflineVolumeStore
{
    private readonly IKvmHost host;

    public OfflineVolumeStore(IKvmHost host) => this.host = host;

    private HostPaths Paths => host.Paths;

    /// <summary>Every file in the pool's folder, as libvirt lists them (non-images as raw); unreadable ones as errors.</summary>
    public IReadOnlyList<VolumeReadResult> List(string poolName)
    {
        StoragePool pool = host.GetPool(poolName);
        string folder = RequireFolder(pool);
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
                EnsureInside(pool, file, name);
                results.Add(new VolumeReadResult(file, Read(file, pool.Name, attachments), null));
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
        string file = System.IO.Path.Combine(RequireFolder(pool), name);
        if (!File.Exists(file))
        {
            throw VolumeNotFound(pool, name);
        }

        EnsureInside(pool, file, name);
        try
        {
            return Read(file, pool.Name, new DiskAttachments(host).BuildAttachmentIndex());
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

        // A pool's symlink pointing out of the pool is refused by path as it is by name (Add-VMDisk binds paths).
        StoragePool? pool = FindPoolOf(full);
        if (pool is not null)
        {
            EnsureInside(pool, full, System.IO.Path.GetFileName(full));
        }

        return Read(full, pool?.Name, new DiskAttachments(host).BuildAttachmentIndex());
    }

    public StorageVolume Create(VolumeCreateRequest request, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        VolumeNames.Validate(request.Name);
        StoragePool pool = host.GetPool(request.Pool);
        string folder = RequireFolder(pool);
        string file = System.IO.Path.Combine(folder, request.Name);

        // What a killed New-Volume left behind: hidden, but it holds disk space.
        AtomicFile.RemoveAbandonedTempFiles(folder);
        if (File.Exists(file) || new FileInfo(file).LinkTarget is not null || Directory.Exists(file))
        {
            throw new KvmStorageException(ErrorKind.AlreadyExists, VolumeErrorIds.VolumeExists, $"Pool '{pool.Name}' already has a volume named '{request.Name}'.", request.Name);
        }

        ImageCreateOptions options = Copy(request.Image, request.Image.BackingFile);
        if (request.BackingPath is not null)
        {
            EnsureBackingAllowed(request.BackingPath, request.Name);
            string backingHost = request.BackingPath;
            string recorded = backingHost;
            if (request.RelativeBacking)
            {
                string newHostFolder = System.IO.Path.GetDirectoryName(ToHostPath(file))!;
                recorded = System.IO.Path.GetRelativePath(newHostFolder, backingHost);
            }

            options = Copy(options, recorded);
        }

        ImageCreator.Create(file, options, progress, cancellationToken);
        return Read(file, pool.Name, null);
    }

    /// <summary>Deletes a volume's file. Refuses one that another image uses as its backing file unless forced.</summary>
    public void Remove(string poolName, string name, bool force)
    {
        StorageVolume volume = Get(poolName, name);
        if (!force)
        {
            if (volume.AttachedTo.Count > 0)
            {
                throw new KvmStorageException(
                    ErrorKind.InvalidOperation,
                    VolumeErrorIds.VolumeAttached,
                    $"Volume '{volume.Name}' is in use by VM {string.Join(", ", volume.AttachedTo.Select(v => $"'{v}'"))}. Detach it first (Remove-VMDisk), or use -Force.",
                    volume.Name);
            }

            List<string> users = BackingUsers.Find(host, volume.Path);
            if (users.Count > 0)
            {
                throw new KvmStorageException(
                    ErrorKind.InvalidOperation,
                    VolumeErrorIds.VolumeIsBackingFile,
                    $"Volume '{volume.Name}' is the backing file of {string.Join(", ", users)}; removing it would break them. Use -Force to remove it anyway.",
                    volume.Name);
            }
        }

        ImageLock.EnsureNotInUse(volume.LocalPath, forWrite: true);
        File.Delete(volume.LocalPath);
        AtomicFile.SyncDirectory(System.IO.Path.GetDirectoryName(volume.LocalPath)!);
    }

    public StorageVolume Resize(string poolName, string name, ulong newSize, ImageResizeOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        StorageVolume volume = Get(poolName, name);
        ImageResizer.Resize(volume.LocalPath, newSize, options, progress, cancellationToken);
        return Get(volume.Pool!, volume.Name);
    }

    private StorageVolume Read(string localFile, string? poolName, IReadOnlyDictionary<string, SortedSet<string>>? attachments)
    {
        ImageInfo info = ImageInspector.Inspect(localFile, new ImageInspectOptions { ForceShare = true, AllowMissingBacking = true, HostPathResolver = HostPathResolver });
        FileStatus status = FileStatus.Get(localFile);
        var chain = new List<string> { ToHostPath(info.Path) };
        chain.AddRange(info.BackingChain.Select(b => ToHostPath(b.Path)));
        return new StorageVolume
        {
            Name = System.IO.Path.GetFileName(localFile),
            Pool = poolName,
            Path = ToHostPath(localFile),
            LocalPath = localFile,
            Format = info.Format,
            Capacity = info.VirtualSize,
            Allocation = info.ActualSize,
            FileLength = info.FileLength,
            ClusterSize = info.ClusterSize,
            BackingFile = info.BackingFile,
            BackingPath = info.FullBackingFile is null ? null : ToHostPath(info.FullBackingFile),
            BackingFormat = info.BackingFormat,
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

    /// <summary>
    /// The rule for backing files of new volumes: a regular file, and either inside a file pool's folder or a
    /// recognised image format. A raw file elsewhere (/etc/shadow, a key) would expose its bytes to the guest, and a
    /// device or FIFO is no image at all.
    /// </summary>
    private void EnsureBackingAllowed(string backingHostPath, string volumeName)
    {
        string local = backingHostPath.StartsWith('/') ? Paths.Resolve(backingHostPath) : backingHostPath;
        if (!File.Exists(local))
        {
            return; // ImageCreator reports BackingFileNotFound.
        }

        if (!ImageInspector.IsRegularFile(local))
        {
            throw new KvmStorageException(ErrorKind.PermissionDenied, VolumeErrorIds.BackingNotAllowed, $"'{backingHostPath}' is not a regular file; it cannot back volume '{volumeName}'.", volumeName);
        }

        if (FindPoolOf(System.IO.Path.GetFullPath(local)) is not null)
        {
            return;
        }

        ImageFormat format;
        try
        {
            format = ImageInspector.DetectFormat(local);
        }
        catch (KvmStorageException e)
        {
            throw new KvmStorageException(ErrorKind.PermissionDenied, VolumeErrorIds.BackingNotAllowed, $"'{backingHostPath}' cannot back volume '{volumeName}': {e.Message}", volumeName, e);
        }

        if (format == ImageFormat.Raw)
        {
            throw new KvmStorageException(
                ErrorKind.PermissionDenied,
                VolumeErrorIds.BackingNotAllowed,
                $"'{backingHostPath}' is outside every storage pool and not a disk image (no image format recognised); it is not allowed as the backing file of '{volumeName}'. Put a raw image in a pool folder to use it as a backing file.",
                volumeName);
        }
    }

    private string ToHostPath(string local) => Paths.ToHostPath(local) ?? local;

    private StoragePool? FindPoolOf(string localFile)
    {
        string folder = System.IO.Path.GetDirectoryName(localFile)!;
        return host.ListPools()
            .Select(r => r.Pool)
            .FirstOrDefault(p => p is not null && p.Type.HoldsFileVolumes() && p.LocalPath is not null && System.IO.Path.TrimEndingDirectorySeparator(p.LocalPath) == folder);
    }

    private static string RequireFolder(StoragePool pool)
    {
        if (!pool.Type.HoldsFileVolumes() || pool.LocalPath is null)
        {
            throw new KvmStorageException(
                ErrorKind.NotSupported,
                VolumeErrorIds.PoolHasNoFolder,
                $"Pool '{pool.Name}' is of type {pool.Type.ToXmlName()}: its volumes are managed by libvirt, which the offline backend cannot reach.",
                pool.Name);
        }

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

    /// <summary>A name that resolves outside the pool folder (through a symlink) is refused.</summary>
    private static void EnsureInside(StoragePool pool, string file, string name)
    {
        var info = new FileInfo(file);
        if (info.LinkTarget is null)
        {
            return;
        }

        string folder = System.IO.Path.TrimEndingDirectorySeparator(System.IO.Path.GetFullPath(pool.LocalPath!));
        FileSystemInfo? target = info.ResolveLinkTarget(returnFinalTarget: true);
        string resolved = target?.FullName ?? string.Empty;
        string? realFolder = new DirectoryInfo(folder).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? folder;
        if (!resolved.StartsWith(folder + "/", StringComparison.Ordinal) && !resolved.StartsWith(realFolder + "/", StringComparison.Ordinal))
        {
            throw new KvmStorageException(
                ErrorKind.PermissionDenied,
                VolumeErrorIds.VolumeOutsidePool,
                $"Volume '{name}' of pool '{pool.Name}' is a link to '{info.LinkTarget}', outside the pool folder; the module does not read or write through it.",
                name);
        }
    }

    private ImageCreateOptions Copy(ImageCreateOptions o, string? backingFile) => new()
    {
        Format = o.Format,
        VirtualSize = o.VirtualSize,
        Preallocation = o.Preallocation,
        ClusterSize = o.ClusterSize,
        Compat = o.Compat,
        LazyRefcounts = o.LazyRefcounts,
        RefcountBits = o.RefcountBits,
        BackingFile = backingFile,
        BackingFormat = o.BackingFormat,
        Mode = o.Mode,
        Owner = o.Owner,
        Group = o.Group,
        HostPathResolver = HostPathResolver,
    };

    /// <summary>Absolute paths recorded in images are the host's view: resolve them under the host root.</summary>
    private Func<string, string>? HostPathResolver => Paths.IsSystemRoot ? null : Paths.Resolve;
}
