using KvmStorage.Core.Errors;

namespace KvmStorage.Core.Pools;

/// <summary>What a new pool should be: the parameters of New-StoragePool, turned into libvirt XML by <see cref="ToDefinition"/>.</summary>
public sealed record PoolSpec
{
    public required PoolType Type { get; init; }

    public required string Name { get; init; }

    public Guid? Uuid { get; init; }

    /// <summary>Target path; defaults per type (logical: /dev/VG, disk: /dev, iscsi: /dev/disk/by-path).</summary>
    public string? TargetPath { get; init; }

    public IReadOnlyList<string> SourceHosts { get; init; } = [];

    public int? SourcePort { get; init; }

    public string? SourceDirectory { get; init; }

    public IReadOnlyList<string> SourceDevices { get; init; } = [];

    public string? SourceName { get; init; }

    public string? SourceFormat { get; init; }

    public int? ProtocolVersion { get; init; }

    public string? AuthUsername { get; init; }

    public Guid? SecretUuid { get; init; }

    public string? SecretUsage { get; init; }

    public Permissions Permissions { get; init; } = Permissions.None;

    public PoolDefinition ToDefinition()
    {
        PoolNames.Validate(Name);
        var definition = PoolDefinition.Create(Type, Name, Uuid ?? Guid.NewGuid());
        foreach (string host in SourceHosts)
        {
            definition.AddSourceHost(host, SourcePort);
        }

        foreach (string device in SourceDevices)
        {
            definition.AddSourceDevice(device);
        }

        string? dir = SourceDirectory ?? (Type == PoolType.Gluster ? "/" : null);
        if (dir is not null)
        {
            definition.SetSourceDirectory(dir);
        }

        if (SourceName is not null)
        {
            definition.SetSourceName(SourceName);
        }

        string? format = SourceFormat ?? Type switch
        {
            PoolType.Netfs or PoolType.Fs => "auto",
            PoolType.Logical => "lvm2",
            _ => null,
        };
        if (format is not null)
        {
            definition.SetSourceFormat(format);
        }

        if (ProtocolVersion is not null)
        {
            definition.SetSourceProtocolVersion(ProtocolVersion.Value);
        }

        if (AuthUsername is not null)
        {
            if (SecretUuid is null && SecretUsage is null)
            {
                throw new KvmStorageException(ErrorKind.InvalidArgument, PoolErrorIds.SecretRequired, "An authentication user name needs the libvirt secret holding its password or key: give its UUID or usage.", Name);
            }

            definition.SetSourceAuth(Type == PoolType.Rbd ? "ceph" : "chap", AuthUsername, SecretUuid?.ToString("D"), SecretUuid is null ? SecretUsage : null);
        }

        string? target = TargetPath ?? Type switch
        {
            PoolType.Logical when SourceName is not null => "/dev/" + SourceName,
            PoolType.Disk => "/dev",
            PoolType.Iscsi => "/dev/disk/by-path",
            _ => null,
        };
        if (target is not null)
        {
            if (!Type.HasTarget())
            {
                throw new KvmStorageException(ErrorKind.InvalidArgument, ErrorIds.InvalidTargetPath, $"A {Type.ToXmlName()} pool has no target path.", Name);
            }

            definition.TargetPath = target.Length > 1 ? target.TrimEnd('/') : target;
        }

        if (Permissions != Permissions.None)
        {
            definition.Permissions = Permissions;
        }

        return definition;
    }
}
