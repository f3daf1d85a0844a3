using KvmStorage.Core.Access;
using KvmStorage.Core.Backends;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Convert;
using KvmStorage.Core.Pools;

namespace KvmStorage.Core.Volumes;

/// <summary>
/// Moves volume data on a host: conversions, copies, linked clones, imports and exports. Sources are only read
/// (block readers, QEMU's locks respected); outputs are new files built under a temporary name.
/// </summary>
public sealed class VolumeTransfer(IKvmHost host)
{
    private readonly HostFiles files = new(host);

    /// <summary>The file extension the module gives an output format: .qcow2, .raw, .vmdk, .vhdx, .vhd or .vdi.</summary>
    public static string ExtensionOf(ImageFormat format) => VolumeNames.ExtensionOf(format);

    /// <summary>
    /// Where a new volume named <paramref name="name"/> goes in pool <paramref name="pool"/>; refuses bad and taken
    /// names, a pool folder that leads out of the host root, and a connection that may not write.
    /// </summary>
    public string NewVolumePath(string pool, string name)
    {
        VolumeNames.Validate(name);
        StoragePool target = host.GetPool(pool);
        host.EnsureWritable($"Creating volume '{name}'", name);
        string folder = files.PoolFolder(target);
        if (!Directory.Exists(folder))
        {
            throw new KvmStorageException(ErrorKind.NotFound, VolumeErrorIds.PoolFolderMissing, $"The folder '{folder}' of pool '{target.Name}' does not exist; build the pool first.", target.Name);
        }

        string file = Path.Combine(folder, name);
        if (File.Exists(file) || Directory.Exists(file) || new FileInfo(file).LinkTarget is not null)
        {
            throw new KvmStorageException(ErrorKind.AlreadyExists, VolumeErrorIds.VolumeExists, $"Pool '{target.Name}' already has a volume named '{name}'.", name);
        }

        return file;
    }

    /// <summary>Converts (or flattens) <paramref name="source"/>'s contents into a new file at <paramref name="destinationLocalPath"/>.</summary>
    public StorageVolume Convert(StorageVolume source, string destinationLocalPath, ConvertOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(options);
        using (IBlockReader reader = BlockReaders.Open(source.LocalPath, new BlockOpenOptions { BackingRule = files.BackingRule, Passphrase = options.SourcePassphrase, ForceShare = options.SourceForceShare }))
        {
            ImageConverter.Convert(reader, destinationLocalPath, options, progress, cancellationToken);
        }

        return Written(destinationLocalPath);
    }

    /// <summary>Converts a file outside the pools (an import); its backing paths are read as this machine sees them.</summary>
    public StorageVolume ConvertFile(string sourceLocalPath, string destinationLocalPath, ConvertOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        using (IBlockReader reader = BlockReaders.Open(sourceLocalPath, new BlockOpenOptions { BackingRule = files.LocalBackingRule, Passphrase = options.SourcePassphrase }))
        {
            ImageConverter.Convert(reader, destinationLocalPath, options, progress, cancellationToken);
        }

        return Written(destinationLocalPath);
    }

    /// <summary>
    /// Converts <paramref name="source"/> and puts the result in its place under its own name, atomically, once complete.
    /// Refused for a volume that other images use as backing file or that a VM uses: they record its format.
    /// </summary>
    public StorageVolume Replace(StorageVolume source, ConvertOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(options);
        PrepareReplace(source);

        // The new image takes the source's place: it keeps the source's mode and owner, and overwrites it once complete.
        ConvertOptions replacing = options with { Overwrite = true, Mode = source.Mode, Owner = source.Owner, Group = source.Group };
        using (IBlockReader reader = BlockReaders.Open(source.LocalPath, new BlockOpenOptions { BackingRule = files.BackingRule, Passphrase = options.SourcePassphrase, ForceShare = options.SourceForceShare }))
        using (ImageLock.AcquireForWrite(source.LocalPath))
        {
            ImageConverter.Convert(reader, source.LocalPath, replacing, progress, cancellationToken);
        }

        return Written(source.LocalPath);
    }

    /// <summary>
    /// The refusals of <see cref="Replace"/>, made before anything is asked or written: a connection that may not
    /// write, a volume that a VM or another image uses.
    /// </summary>
    public void PrepareReplace(StorageVolume source)
    {
        ArgumentNullException.ThrowIfNull(source);
        host.EnsureWritable($"Converting '{source.Name}'", source.Path);
        EnsureNotReferenced(source);
    }

    /// <summary>
    /// Copies an overlay without flattening it: only the clusters the top image holds, the copy backed by the same
    /// backing file (its recorded name when the copy sits in the same folder, else its full host path).
    /// </summary>
    public StorageVolume CopyKeepingBacking(StorageVolume source, string destinationLocalPath, ConvertOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(options);
        if (source.BackingPath is null || source.BackingFile is null)
        {
            return Convert(source, destinationLocalPath, options, progress, cancellationToken);
        }

        if (options.Format != ImageFormat.Qcow2)
        {
            throw new KvmStorageException(ErrorKind.InvalidArgument, ConvertErrorIds.InvalidConvertOptions, "Only a qcow2 copy can keep the backing file.", source.Name);
        }

        bool sameFolder = string.Equals(Path.GetDirectoryName(Path.GetFullPath(destinationLocalPath)), Path.GetDirectoryName(source.LocalPath), StringComparison.Ordinal);
        string recorded = sameFolder ? source.BackingFile : source.BackingPath;
        ImageFormat? backingFormat = ImageFormats.TryParse(source.BackingFormat, out ImageFormat f) ? f : source.Image.BackingChain.Count > 0 ? source.Image.BackingChain[0].ImageFormat : null;
        using (IBlockReader reader = BlockReaders.Open(source.LocalPath, new BlockOpenOptions { BackingRule = files.BackingRule, Passphrase = options.SourcePassphrase, ForceShare = options.SourceForceShare }))
        using (IBlockReader top = TopLayerReader.Open(source.LocalPath, new BlockOpenOptions { Passphrase = options.SourcePassphrase }))
        {
            // An overlay holds only the top image's clusters: nothing to preallocate (the converter refuses a backing
            // file with preallocation).
            ConvertOptions overlay = options with
            {
                ClusterSize = options.ClusterSize ?? source.ClusterSize,
                Preallocation = Preallocation.Off,
                BackingFile = recorded,
                BackingFormat = backingFormat,
                AllocationSource = top,
            };
            ImageConverter.Convert(reader, destinationLocalPath, overlay, progress, cancellationToken);
        }

        return Written(destinationLocalPath);
    }

    /// <summary>A linked clone: a new empty qcow2 overlay whose backing file is <paramref name="source"/> (full host path).</summary>
    public StorageVolume Link(StorageVolume source, string destinationLocalPath, UnixFileMode mode)
    {
        ArgumentNullException.ThrowIfNull(source);
        ImageCreator.Create(destinationLocalPath, new ImageCreateOptions
        {
            Format = ImageFormat.Qcow2,
            BackingFile = source.Path,
            BackingFormat = source.ImageFormat,
            Mode = mode,
            BackingRule = files.BackingRule,
        });
        return Written(destinationLocalPath);
    }

    /// <summary>
    /// The volume just written, after its pool was refreshed: a libvirt daemon lists a pool's files from its own
    /// cache. A failed refresh is reported with what was done (the file exists), never left silent.
    /// </summary>
    private StorageVolume Written(string localPath)
    {
        if (host.GetVolumeByPath(localPath).Pool is { } pool)
        {
            host.RefreshAfterWrite(pool, $"'{host.Paths.ToHostPath(localPath) ?? localPath}' was written");
        }

        return host.GetVolumeByPath(localPath);
    }

    private void EnsureNotReferenced(StorageVolume volume)
    {
        if (volume.AttachedTo.Count > 0)
        {
            throw new KvmStorageException(
                ErrorKind.InvalidOperation,
                VolumeErrorIds.VolumeAttached,
                $"Volume '{volume.Name}' is used by {string.Join(", ", volume.AttachedTo)}; replacing it in place would change what the VM reads. Convert to a new volume instead.",
                volume.Name);
        }

        BackingUsers.ThrowIfAny(host, volume, "they record its format, and replacing it would break them.");
    }
}
