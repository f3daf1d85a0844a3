using System.Management.Automation;
using KvmStorage.Core.Pools;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.StoragePool;

/// <summary>Set-StoragePool: changes a pool's autostart and target permissions, keeping everything else in its definition.</summary>
[Cmdlet(VerbsCommon.Set, "StoragePool", SupportsShouldProcess = true, DefaultParameterSetName = ByName)]
[OutputType(typeof(Core.Pools.StoragePool))]
public sealed class SetStoragePoolCommand : PoolItemCmdlet
{
    /// <summary>Start the pool when libvirt starts.</summary>
    [Parameter]
    public bool Autostart { get; set; }

    /// <summary>Octal mode of the target folder, such as 0711 or 0755.</summary>
    [Parameter]
    [ValidatePattern("^0?[0-7]{3,4}$")]
    public string? Mode { get; set; }

    /// <summary>Numeric owner (uid) of the target folder.</summary>
    [Parameter]
    [ValidateRange(0, int.MaxValue)]
    public int Owner { get; set; }

    /// <summary>Numeric group (gid) of the target folder.</summary>
    [Parameter]
    [ValidateRange(0, int.MaxValue)]
    public int Group { get; set; }

    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessPool(Core.Pools.StoragePool pool)
    {
        var changes = new List<string>();
        bool? autostart = MyInvocation.BoundParameters.ContainsKey(nameof(Autostart)) ? Autostart : null;
        if (autostart is not null)
        {
            changes.Add($"autostart {(autostart.Value ? "on" : "off")}");
        }

        Permissions permissions = pool.Permissions;
        if (Mode is not null && Permissions.TryParseMode(Mode, out UnixFileMode mode))
        {
            permissions = permissions with { Mode = mode };
            changes.Add("mode " + Permissions.FormatMode(mode));
        }

        if (MyInvocation.BoundParameters.ContainsKey(nameof(Owner)))
        {
            permissions = permissions with { Owner = Owner };
            changes.Add($"owner {Owner}");
        }

        if (MyInvocation.BoundParameters.ContainsKey(nameof(Group)))
        {
            permissions = permissions with { Group = Group };
            changes.Add($"group {Group}");
        }

        if (permissions != pool.Permissions && !pool.PoolType.HasTarget())
        {
            throw new Core.Errors.KvmStorageException(Core.Errors.ErrorKind.InvalidArgument, PoolErrorIds.InvalidPermissions, $"Pool '{pool.Name}' is of type {pool.Type}, which has no target folder to set permissions on.", pool.Name);
        }

        if (changes.Count == 0)
        {
            WriteVerbose($"Nothing to change for pool '{pool.Name}'.");
        }
        else if (ShouldProcess(pool.Name, "Set " + string.Join(", ", changes)))
        {
            Permissions final = permissions;
            pool = KvmHost.UpdatePool(pool.Name, d => d.Permissions = final, autostart);
        }

        if (PassThru)
        {
            WriteObject(pool);
        }
    }
}
