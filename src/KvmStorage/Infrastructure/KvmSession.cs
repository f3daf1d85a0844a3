using KvmStorage.Core.Hosting;

namespace KvmStorage.Infrastructure;

/// <summary>The connections opened in this PowerShell process and which one is the default.</summary>
internal static class KvmSession
{
    private static readonly object Gate = new();
    private static readonly List<KvmConnection> Open = [];
    private static KvmConnection? defaultConnection;

    public static KvmConnection? Default
    {
        get
        {
            lock (Gate)
            {
                return defaultConnection is { IsOpen: true } ? defaultConnection : null;
            }
        }
    }

    public static IReadOnlyList<KvmConnection> Connections
    {
        get
        {
            lock (Gate)
            {
                Open.RemoveAll(c => !c.IsOpen);
                return [.. Open];
            }
        }
    }

    public static void Add(KvmConnection connection, bool makeDefault)
    {
        lock (Gate)
        {
            Open.Add(connection);
            if (makeDefault)
            {
                defaultConnection = connection;
            }
        }
    }

    public static bool IsDefault(KvmConnection connection)
    {
        lock (Gate)
        {
            return ReferenceEquals(defaultConnection, connection);
        }
    }

    public static void Close(KvmConnection connection)
    {
        lock (Gate)
        {
            Open.Remove(connection);
            if (ReferenceEquals(defaultConnection, connection))
            {
                defaultConnection = Open.LastOrDefault(c => c.IsOpen);
            }
        }

        connection.Dispose();
    }
}

/// <summary>
/// Says what an empty -Connection means: the variable holds no connection, usually because the Connect-LibvirtHost that
/// should have filled it failed (instead of PowerShell's "argument collection contains a null value").
/// </summary>
[AttributeUsage(AttributeTargets.Property | AttributeTargets.Field)]
public sealed class ConnectionArgumentAttribute : System.Management.Automation.ArgumentTransformationAttribute
{
    public override object? Transform(System.Management.Automation.EngineIntrinsics engineIntrinsics, object? inputData)
    {
        object? value = inputData is System.Management.Automation.PSObject pso ? pso.BaseObject : inputData;
        bool empty = value is null || (value is System.Collections.IEnumerable items and not string && items.Cast<object?>().Any(i => i is null or System.Management.Automation.PSObject { BaseObject: null }));
        if (empty)
        {
            throw new System.Management.Automation.ArgumentTransformationMetadataException(
                "The value holds no connection. If it came from Connect-LibvirtHost, that command failed (see its error); Get-LibvirtHost lists the open connections. Leave -Connection out to use the session's default host.");
        }

        return inputData!;
    }
}
