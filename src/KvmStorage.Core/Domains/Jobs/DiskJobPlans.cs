using System.Globalization;
using System.Xml.Linq;
using KvmStorage.Core.Backends;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Volumes;

namespace KvmStorage.Core.Domains.Jobs;

/// <summary>Error ids of the jobs on running VMs' disks.</summary>
public static class DiskJobErrorIds
{
    /// <summary>libvirt's backup job failed or was cancelled by someone else (WriteError).</summary>
    public const string BackupFailed = "BackupFailed";

    /// <summary>A block copy or block commit ended before it was ready (WriteError).</summary>
    public const string BlockJobFailed = "BlockJobFailed";

    /// <summary>-Incremental for a VM that is not running (InvalidOperation).</summary>
    public const string IncrementalNeedsRunningVM = "IncrementalBackupNeedsRunningVM";

    /// <summary>-Incremental for a disk that is not qcow2, which cannot hold a dirty bitmap (NotSupported).</summary>
    public const string IncrementalNeedsQcow2 = "IncrementalBackupNeedsQcow2";

    /// <summary>No earlier backup's checkpoint (or its backup file) to continue from (NotFound).</summary>
    public const string NoPreviousBackup = "NoPreviousBackup";

    /// <summary>The VM has no disk that can be backed up, moved or snapshotted (InvalidOperation).</summary>
    public const string NoDiskToBackUp = "NoDiskToBackUp";

    /// <summary>The disk named is a cdrom, read-only, or has no image file (InvalidOperation).</summary>
    public const string DiskNotCopyable = "DiskNotCopyable";


    /// <summary>-Name names one file for several disks (InvalidArgument).</summary>
    public const string InvalidBackupName = "InvalidBackupName";

    /// <summary>The checkpoint does not exist (NotFound).</summary>
    public const string CheckpointNotFound = "CheckpointNotFound";

    /// <summary>The image is not the active (top) image of the running VM's disk, or the base is not its backing file (InvalidOperation).</summary>
    public const string NotActiveLayer = "NotActiveLayer";

    /// <summary>A move to a format other than qcow2 or raw (InvalidArgument).</summary>
    public const string InvalidMoveFormat = "InvalidMoveFormat";

    /// <summary>-RemoveSource of an image outside every pool (InvalidOperation).</summary>
    public const string SourceNotInPool = "SourceNotInPool";

    /// <summary>Moves and disk snapshots of encrypted disks (NotSupported).</summary>
    public const string EncryptedDiskNotMovable = "EncryptedDiskNotMovable";
}

/// <summary>One disk of a backup: the disk, its image, and the backup file (local and host path).</summary>
public sealed class DiskBackupFile(DomainDisk disk, StorageVolume source, string localPath, string hostPath)
{
    public DomainDisk Disk { get; } = disk;

    public StorageVolume Source { get; } = source;

    public string LocalPath { get; } = localPath;

    public string HostPath { get; } = hostPath;

    /// <summary>An incremental backup's backing file: the previous backup of the disk (host path).</summary>
    public string? Backing { get; internal set; }
}

/// <summary>A checked Backup-VMDisk.</summary>
public sealed class DiskBackupPlan
{
    internal DiskBackupPlan(string vm, bool running, IReadOnlyList<DiskBackupFile> files, IReadOnlyList<DomainDisk> allDisks, string pool, string? checkpoint, string? previousCheckpoint)
    {
        VMName = vm;
        Running = running;
        Files = files;
        AllDisks = allDisks;
        Pool = pool;
        Checkpoint = checkpoint;
        PreviousCheckpoint = previousCheckpoint;
    }

    public string VMName { get; }

    public bool Running { get; }

    public IReadOnlyList<DiskBackupFile> Files { get; }

    public IReadOnlyList<DomainDisk> AllDisks { get; }

    public string Pool { get; }

    /// <summary>The checkpoint this backup starts (qcow2 disks of a running VM), or null.</summary>
    public string? Checkpoint { get; }

    /// <summary>The checkpoint an incremental backup continues from; null for a full one.</summary>
    public string? PreviousCheckpoint { get; }

    public string Description
    {
        get
        {
            string kind = PreviousCheckpoint is null ? "full" : $"incremental (since checkpoint {PreviousCheckpoint})";
            string how = Running ? "through libvirt's backup job, the VM running" : "by copying the images of the shut-off VM";
            return $"Back up ({kind}) {string.Join(", ", Files.Select(f => $"{f.Disk.Target} to '{f.HostPath}'"))}, {how}";
        }
    }

    internal IBlockJobs? Jobs { get; init; }
}

/// <summary>A checked Move-VMDisk.</summary>
public sealed class DiskMovePlan
{
    internal DiskMovePlan(string vm, bool running, DomainDisk disk, StorageVolume source, string localPath, string hostPath, ImageFormat format, string pool, bool removeSource)
    {
        VMName = vm;
        Running = running;
        Disk = disk;
        Source = source;
        LocalPath = localPath;
        HostPath = hostPath;
        Format = format;
        Pool = pool;
        RemoveSource = removeSource;
    }

    public string VMName { get; }

    public bool Running { get; }

    public DomainDisk Disk { get; }

    public StorageVolume Source { get; }

    public string LocalPath { get; }

    public string HostPath { get; }

    public ImageFormat Format { get; }

    public string Pool { get; }

    public bool RemoveSource { get; }

    public string Description =>
        $"Move disk {Disk.Target} from '{Source.Path}' to '{HostPath}' ({Format.ToQemuName()}){(Running ? " by block copy, the VM running" : string.Empty)}{(RemoveSource ? ", then DELETE the old image" : string.Empty)}";

    internal IBlockJobs? Jobs { get; init; }
}

/// <summary>A checked merge of a running VM's active overlay (libvirt block commit with pivot).</summary>
public sealed class ActiveCommitPlan
{
    internal ActiveCommitPlan(string vm, DomainDisk disk, StorageVolume overlay, StorageVolume baseVolume, bool removeOverlay)
    {
        VMName = vm;
        Disk = disk;
        Overlay = overlay;
        Base = baseVolume;
        RemoveOverlay = removeOverlay;
    }

    public string VMName { get; }

    public DomainDisk Disk { get; }

    public StorageVolume Overlay { get; }

    public StorageVolume Base { get; }

    public bool RemoveOverlay { get; }

    public string Description =>
        $"Commit the data of '{Overlay.Path}' into '{Base.Path}' while '{VMName}' runs (block commit), then switch disk {Disk.Target} to the base{(RemoveOverlay ? $" and DELETE '{Overlay.Path}'" : string.Empty)}";

    internal IBlockJobs? Jobs { get; init; }
}

/// <summary>One disk of a disk-only snapshot: the disk, its current image and the new overlay.</summary>
public sealed record DiskOverlay(DomainDisk Disk, StorageVolume Source, string LocalPath, string HostPath);

/// <summary>A checked New-VMDiskSnapshot.</summary>
public sealed class DiskSnapshotPlan
{
    internal DiskSnapshotPlan(string vm, bool running, string name, IReadOnlyList<DomainDisk> allDisks, IReadOnlyList<DiskOverlay> overlays)
    {
        VMName = vm;
        Running = running;
        Name = name;
        AllDisks = allDisks;
        Overlays = overlays;
    }

    public string VMName { get; }

    public bool Running { get; }

    public string Name { get; }

    public IReadOnlyList<DomainDisk> AllDisks { get; }

    public IReadOnlyList<DiskOverlay> Overlays { get; }

    public string Description =>
        $"Take disk snapshot '{Name}': {string.Join(", ", Overlays.Select(o => $"{o.Disk.Target} continues on new overlay '{o.HostPath}'"))}{(Running ? " (the VM running)" : string.Empty)}";

    internal IBlockJobs? Jobs { get; init; }
}

/// <summary>A libvirt checkpoint of a VM (a point that incremental backups continue from).</summary>
public sealed class VMDiskCheckpoint
{
    public required string VMName { get; init; }

    public required string Name { get; init; }

    public string? Parent { get; init; }

    public DateTimeOffset CreationTime { get; init; }

    public string? Description { get; init; }

    /// <summary>The disks with a dirty bitmap in this checkpoint.</summary>
    public IReadOnlyList<string> Disks { get; init; } = [];

    /// <summary>For Backup-VMDisk's checkpoints: each disk's backup file (host path) made at this point.</summary>
    public IReadOnlyDictionary<string, string> Backups { get; init; } = new Dictionary<string, string>();

    public required string HostName { get; init; }

    internal static VMDiskCheckpoint Parse(string xml, string vm, string hostName)
    {
        XElement root;
        try
        {
            root = XElement.Parse(xml);
        }
        catch (System.Xml.XmlException e)
        {
            throw new KvmStorageException(ErrorKind.InvalidData, DiskJobErrorIds.CheckpointNotFound, $"libvirt returned a checkpoint of '{vm}' that is not XML: {e.Message}", vm, e);
        }

        string? description = (string?)root.Element("description");
        var backups = new Dictionary<string, string>(StringComparer.Ordinal);
        if (description is not null && description.StartsWith("KvmStorage backup:", StringComparison.Ordinal))
        {
            foreach (string pair in description["KvmStorage backup:".Length..].Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                int eq = pair.IndexOf('=', StringComparison.Ordinal);
                if (eq > 0)
                {
                    backups[pair[..eq]] = pair[(eq + 1)..];
                }
            }
        }

        long created = long.TryParse((string?)root.Element("creationTime"), NumberStyles.Integer, CultureInfo.InvariantCulture, out long t) ? t : 0;
        return new VMDiskCheckpoint
        {
            VMName = vm,
            Name = (string?)root.Element("name") ?? string.Empty,
            Parent = (string?)root.Element("parent")?.Element("name"),
            CreationTime = DateTimeOffset.FromUnixTimeSeconds(created),
            Description = description,
            Disks = [.. root.Element("disks")?.Elements("disk").Where(d => (string?)d.Attribute("checkpoint") == "bitmap").Select(d => (string?)d.Attribute("name") ?? string.Empty) ?? []],
            Backups = backups,
            HostName = hostName,
        };
    }
}
